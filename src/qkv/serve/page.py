"""The served pages and their static files: the trace view of :mod:`qkv.view.html_assets` plus a form
(``static/app.*``), the compare page (``static/compare.js``) and the probe page (``static/probe.js``), which share
one way to ask the server (``static/api.js``: it waits and retries after ``503`` + ``Retry-After``, saying so).

Assets are looked up by name in a fixed table built at start-up (:func:`assets`); no path from a request
is ever opened. The pages load only their own scripts and styles (``script-src 'self'``) and may talk only to
their own server (``connect-src 'self'``).
"""

from __future__ import annotations

import html
import json
from importlib import resources
from typing import NamedTuple

from ..lens.probe_io import twins_path
from ..view.html_assets import BODY, CSS, JS
from .schemas import DEFAULT_QUERY, DEFAULT_TEXT

__all__ = ["Asset", "assets", "index_html", "compare_html", "probe_html", "html_pages", "CSP", "SECURITY_HEADERS"]

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

SOFT = "The cat sat on the mat because it was soft."  #: the essay sentence's twin (one word changed)
PAGES = {"/": "Trace", "/compare": "Compare", "/probe": "Probe"}  #: path -> the link's name in every page's menu

_SHELL = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>qkv serve · {title}</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/static/view.css">
<link rel="stylesheet" href="/static/app.css">
</head>
<body data-page="{page}"{attrs}>
<header>
  <nav aria-label="pages">{nav}</nav>
  <h1>{heading}</h1>
{header}
</header>
{body}
<footer>Served by <code>qkv serve</code> from this machine: nothing leaves it. {help}
  JSON API: <a href="/openapi.json">/openapi.json</a>.
</footer>
{scripts}
</body>
</html>
"""

_TRACE_HEADER = """  <form id="ask" autocomplete="off">
    <label for="text">Sentence</label>
    <input id="text" name="text" type="text" maxlength="{max_chars}" value="{text}" placeholder="{text}"
           spellcheck="false">
    <button type="submit" id="go">Trace</button>
    <span id="status" role="status"></span>
  </form>
  <p id="error" role="alert" hidden></p>
  <div class="sub" id="model"></div>
  <div id="sentence" aria-label="tokens (click one to make it the query)"></div>
  <p id="summary" hidden></p>"""

_COMPARE_HEADER = """  <p class="sub">A minimal pair: two texts that differ in one word. Which heads change their
    preference between two tokens when that word changes? (The same as <code>qkv compare</code>.)</p>
  <form id="compare" class="ask-grid" autocomplete="off">
    <label for="text_a">Text A</label>
    <input id="text_a" type="text" maxlength="{max_chars}" value="{text_a}" placeholder="{text_a}" spellcheck="false">
    <label for="text_b">Text B</label>
    <input id="text_b" type="text" maxlength="{max_chars}" value="{text_b}" placeholder="{text_b}" spellcheck="false">
    <label for="query">Query</label>
    <span class="row">
      <input id="query" type="text" value="it" placeholder="it" size="8" spellcheck="false">
      <label for="prefer">prefers</label>
      <input id="prefer" type="text" value="cat" placeholder="cat" size="8" spellcheck="false">
      <label for="over">over</label>
      <input id="over" type="text" value="mat" placeholder="mat" size="8" spellcheck="false">
      <label for="measure">measure</label>
      <select id="measure"><option value="weights">weights</option><option value="values">values</option></select>
      <button type="submit" id="go">Compare</button>
      <span id="status" role="status"></span>
    </span>
  </form>
  <p id="error" role="alert" hidden></p>"""

_COMPARE_BODY = """<main class="single">
  <section id="result" hidden>
    <p id="summary"></p>
    <ul id="summaries"></ul>
    <h2 id="heads-title"></h2>
    <table id="heads">
      <thead><tr><th class="token">head</th><th>diff in A</th><th>diff in B</th><th>change</th>
        <th class="token">flips</th></tr></thead>
      <tbody id="heads-body"></tbody>
    </table>
    <p class="note">diff = measure(query → prefer) − measure(query → over); a head flips when its diff changes sign
      between A and B, however small the change; the change column says how far each head moved. Leave the query
      empty for the server's default (the text's pronoun).</p>
  </section>
</main>"""

_PROBE_HEADER = """  <p class="sub">Does any head attend to the right referent more often than chance? Give up to
    {max_items} items, one JSON object per line (qkv's probe schema: text, query, candidates, answer, optional id
    and pair; the same as <code>qkv probe FILE</code>). The box starts with four twin pairs that ship with qkv.</p>
  <form id="probe" autocomplete="off">
    <label for="items">Items (JSON lines)</label>
    <textarea id="items" rows="9" spellcheck="false">{items}</textarea>
    <span class="row">
      <label for="measure">measure</label>
      <select id="measure"><option value="weights">weights</option><option value="values">values</option></select>
      <label for="seed">seed</label>
      <input id="seed" type="number" min="0" value="0" size="6">
      <button type="submit" id="go">Probe</button>
      <span id="status" role="status"></span>
    </span>
  </form>
  <p id="error" role="alert" hidden></p>"""

_PROBE_BODY = """<main class="single">
  <section id="result" hidden>
    <p id="verdict"></p>
    <p class="sub" id="items-used"></p>
    <h2>Held-out best head and baselines</h2>
    <table id="baselines">
      <thead><tr><th class="token">what</th><th>accuracy</th><th>95% interval</th><th>correct</th>
        <th class="token">note</th></tr></thead>
      <tbody id="baselines-body"></tbody>
    </table>
    <h2>Every head (best first)</h2>
    <div class="scroll">
      <table id="heads">
        <thead><tr><th class="token">head</th><th>accuracy</th><th>95% interval</th><th>correct</th>
          <th class="token">note</th></tr></thead>
        <tbody id="heads-body"></tbody>
      </table>
    </div>
  </section>
</main>"""


class Asset(NamedTuple):
    """One static file: its bytes and media type."""

    body: bytes
    media_type: str


def _packaged(name: str) -> bytes:
    return resources.files("qkv.serve").joinpath("static", name).read_bytes()


def assets() -> dict[str, Asset]:
    """``{name: Asset}`` for ``/static/{name}``: the view's script and style, the pages' scripts and style."""
    js, css = "text/javascript; charset=utf-8", "text/css; charset=utf-8"
    return {
        "view.js": Asset(JS.encode(), js),
        "view.css": Asset(CSS.encode(), css),
        "app.css": Asset(_packaged("app.css"), css),
        "intervene.css": Asset(_packaged("intervene.css"), css),
        **{name: Asset(_packaged(name), js) for name in ("api.js", "app.js", "compare.js", "probe.js", "intervene.js")},
    }


def _page(path: str, heading: str, header: str, body: str, scripts: list[str], help: str, attrs: str = "") -> str:
    nav = " ".join(
        f'<a href="{p}" aria-current="page">{name}</a>' if p == path else f'<a href="{p}">{name}</a>'
        for p, name in PAGES.items()
    )
    tags = "\n".join(f'<script src="/static/{s}"></script>' for s in scripts)
    return _SHELL.format(
        title=PAGES[path],
        page=PAGES[path].lower(),
        attrs=attrs,
        nav=nav,
        heading=heading,
        header=header,
        body=body,
        help=help,
        scripts=tags,
    )


def index_html(max_chars: int, text: str = DEFAULT_TEXT, query: str = DEFAULT_QUERY) -> str:
    """The page at ``/``: the form (pre-filled with ``text``; its first trace asks for ``query``) and the view."""
    header = _TRACE_HEADER.format(max_chars=int(max_chars), text=html.escape(text))
    return _page(
        "/",
        "Attention, step by step",
        header,
        BODY,
        ["view.js", "api.js", "app.js", "intervene.js"],
        "Type a sentence and press Trace; click a token to make it the query, a map to pick the head; drag t.",
        attrs=f' data-query="{html.escape(query)}"',
    )


def compare_html(max_chars: int, text_a: str = DEFAULT_TEXT, text_b: str = SOFT) -> str:
    """The page at ``/compare``: a minimal pair through ``POST /api/compare``."""
    header = _COMPARE_HEADER.format(max_chars=int(max_chars), text_a=html.escape(text_a), text_b=html.escape(text_b))
    return _page(
        "/compare",
        "Compare a minimal pair",
        header,
        _COMPARE_BODY,
        ["api.js", "compare.js"],
        "Change one word, press Compare: the heads that flip come first.",
    )


def probe_html(max_items: int, examples: int = 8) -> str:
    """The page at ``/probe``: items through ``POST /api/probe``; the box holds the first ``examples`` shipped
    twin items."""
    lines = [line for line in twins_path().read_text(encoding="utf-8").splitlines() if line.strip()][:examples]
    items = "\n".join(json.dumps(json.loads(line), ensure_ascii=False) for line in lines)
    header = _PROBE_HEADER.format(max_items=int(max_items), items=html.escape(items))
    return _page(
        "/probe",
        "Probe heads over items",
        header,
        _PROBE_BODY,
        ["api.js", "probe.js"],
        "Edit the items, press Probe: verdict, baselines and every head's accuracy with its interval.",
    )


def html_pages(limits) -> dict[str, str]:
    """``{path: page}`` for every page the app serves (:data:`PAGES`), under ``limits`` (a
    :class:`qkv.serve.limits.Limits`)."""
    return {
        "/": index_html(limits.max_chars),
        "/compare": compare_html(limits.max_chars),
        "/probe": probe_html(limits.max_items),
    }
