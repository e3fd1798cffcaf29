"""The served page and its static files: the view of :mod:`qkv.view.html_assets` plus a form (``static/app.*``).

Assets are looked up by name in a fixed table built at start-up (:func:`assets`); no path from a request
is ever opened. The page loads only its own scripts and styles (``script-src 'self'``) and may talk only to
its own server (``connect-src 'self'``).
"""

from __future__ import annotations

import html
from importlib import resources
from typing import NamedTuple

from ..view.html_assets import BODY, CSS, JS
from .schemas import DEFAULT_QUERY, DEFAULT_TEXT

__all__ = ["Asset", "assets", "index_html", "CSP", "SECURITY_HEADERS"]

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
]

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>qkv serve</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/static/view.css">
<link rel="stylesheet" href="/static/app.css">
</head>
<body data-query="{query}">
<header>
  <h1>Attention, step by step</h1>
  <form id="ask" autocomplete="off">
    <label for="text">Sentence</label>
    <input id="text" name="text" type="text" maxlength="{max_chars}" value="{text}" placeholder="{text}"
           spellcheck="false">
    <button type="submit" id="go">Trace</button>
    <span id="status" role="status"></span>
  </form>
  <p id="error" role="alert" hidden></p>
  <div class="sub" id="model"></div>
  <div id="sentence" aria-label="tokens (click one to make it the query)"></div>
  <p id="summary" hidden></p>
</header>
{body}
<footer>Served by <code>qkv serve</code> from this machine: nothing leaves it. Type a sentence and press Trace; click a
  token to make it the query, a map to pick the head; drag t. JSON API: <a href="/openapi.json">/openapi.json</a>.
</footer>
<script src="/static/view.js"></script>
<script src="/static/app.js"></script>
</body>
</html>
"""


class Asset(NamedTuple):
    """One static file: its bytes and media type."""

    body: bytes
    media_type: str


def _packaged(name: str) -> bytes:
    return resources.files("qkv.serve").joinpath("static").joinpath(name).read_bytes()  # one name a call on 3.10


def assets() -> dict[str, Asset]:
    """``{name: Asset}`` for ``/static/{name}``: the view's script and style, the form's script and style."""
    js, css = "text/javascript; charset=utf-8", "text/css; charset=utf-8"
    return {
        "view.js": Asset(JS.encode(), js),
        "view.css": Asset(CSS.encode(), css),
        "app.js": Asset(_packaged("app.js"), js),
        "app.css": Asset(_packaged("app.css"), css),
    }


def index_html(max_chars: int, text: str = DEFAULT_TEXT, query: str = DEFAULT_QUERY) -> str:
    """The page at ``/``: the form (pre-filled with ``text``; its first trace asks for ``query``) and the view."""
    return _PAGE.format(query=html.escape(query), max_chars=int(max_chars), text=html.escape(text), body=BODY)
