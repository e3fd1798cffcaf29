"""Offline checks of a built documentation site: every internal link resolves, nothing loads from outside.

Usage: ``python tools/check_site.py site`` (exit status 1 and one line per problem when something is wrong).

For every HTML page under the site (but ``404.html``, which a server serves at any depth and the offline
site never links):

* each ``href``/``src`` of ``a, link, script, img, source, iframe`` that points inside the site names a
  file that exists, and its ``#fragment`` (when it has one) an ``id``/``name`` in that page;
* only ``<a href>`` may point outside (``http:``, ``https:``, ``//host``, ``mailto:``): a script, style sheet,
  font, image or frame from elsewhere would be a request leaving the page.

Every ``.css`` file is checked for ``url(...)``/``@import`` pointing outside, and every page for inline
``style`` attributes doing the same.
"""

from __future__ import annotations

import re
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

__all__ = ["check_site", "Page"]

LINK_ATTRS = {"a": "href", "link": "href", "script": "src", "img": "src", "source": "src", "iframe": "src"}
OUTSIDE = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|//)", re.I)
ALLOWED_SCHEMES = ("data:", "blob:", "about:", "javascript:void")
CSS_URL = re.compile(r"""(?:url\(\s*['"]?|@import\s+['"])([^'")\s]+)""", re.I)


class Page(HTMLParser):
    """The ids a page defines and the links it makes: ``(tag, url)``."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.links: list[tuple[str, str]] = []
        self.styles: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("id", "name") if tag == "a" else ("id",):
            if a.get(key):
                self.ids.add(a[key])
        attr = LINK_ATTRS.get(tag)
        if attr and a.get(attr) is not None:
            self.links.append((tag, a[attr]))
        if tag == "link" and a.get("imagesrcset"):
            self.links.append((tag, a["imagesrcset"]))
        if a.get("style"):
            self.styles.append(a["style"])


def _outside(url: str) -> bool:
    return bool(OUTSIDE.match(url)) and not url.lower().startswith(ALLOWED_SCHEMES)


def check_site(site: str | Path) -> tuple[list[str], int, int]:
    """``(problems, pages, links)`` for the built site in ``site``."""
    site = Path(site).resolve()
    if not (site / "index.html").is_file():
        return [f"{site}: no index.html (build the site first: make docs)"], 0, 0
    pages = {p: Page(p.read_text(encoding="utf-8")) for p in sorted(site.rglob("*.html")) if p.name != "404.html"}
    problems, count = [], 0
    for path, page in pages.items():
        rel = path.relative_to(site)
        for tag, url in page.links:
            count += 1
            problems += [f"{rel}: <{tag}> {url}: {p}" for p in _check_link(site, path, pages, tag, url)]
        for style in page.styles:
            problems += [f"{rel}: style loads {u} from outside" for u in CSS_URL.findall(style) if _outside(u)]
    for css in sorted(site.rglob("*.css")):
        problems += [
            f"{css.relative_to(site)}: loads {u} from outside"
            for u in CSS_URL.findall(css.read_text(encoding="utf-8"))
            if _outside(u)
        ]
    return problems, len(pages), count


def _check_link(site: Path, path: Path, pages: dict, tag: str, url: str) -> list[str]:
    url = url.strip()
    if not url or url.lower().startswith(ALLOWED_SCHEMES):
        return []
    if OUTSIDE.match(url):
        if tag == "a":
            return []
        return ["loads from outside the site (vendor the file into docs/assets)"]
    parts = urlsplit(url)
    target = path if not parts.path else (path.parent / unquote(parts.path)).resolve()
    if parts.path.endswith("/") or target.is_dir():
        target = target / "index.html"
    if not target.is_relative_to(site):
        return ["points outside the site folder"]
    if not target.is_file():
        return ["no such file"]
    frag = unquote(parts.fragment)
    if frag and target.suffix == ".html" and target in pages and frag not in pages[target].ids:
        return [f"no element with id {frag!r} in {target.relative_to(site)}"]
    return []


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    site = argv[0] if argv else "site"
    problems, n_pages, n_links = check_site(site)
    for p in problems:
        print(p)
    print(f"check_site: {n_pages} pages, {n_links} links, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
