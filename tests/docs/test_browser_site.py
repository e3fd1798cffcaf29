"""The built site in a real headless Chromium, opened from disk: figures render, search works, nothing leaves."""

import pytest

LOCAL = ("file:", "data:", "blob:", "about:")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
]


def open_page(browser, path):
    """Open ``path``; collect console errors and warnings, page errors and every request that leaves the disk."""
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    page.set_default_timeout(15000)
    seen = {"errors": [], "requests": []}
    page.on("console", lambda m: m.type in ("error", "warning") and seen["errors"].append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: seen["errors"].append(f"pageerror: {e}"))
    page.on("request", lambda r: not r.url.startswith(LOCAL) and seen["requests"].append(r.url))
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    return page, seen


def test_the_tutorial_figures_render(browser, site, tmp_path):
    page, seen = open_page(browser, site / "index.html")
    page.locator("nav.md-nav a", has_text="Tutorial").first.click()
    page.wait_for_load_state("load")
    assert page.url.endswith("/tutorial.html")
    figures = page.locator("article img.qkv-figure")
    assert figures.count() >= 2
    sizes = page.evaluate("""() => [...document.querySelectorAll('article img.qkv-figure')].map(
        i => [i.complete, i.naturalWidth, i.naturalHeight])""")
    assert all(done and w > 200 and h > 100 for done, w, h in sizes), sizes
    figures.first.scroll_into_view_if_needed()
    page.screenshot(path=str(tmp_path / "tutorial.png"))
    assert seen == {"errors": [], "requests": []}
    page.close()


def test_search_works_from_disk(browser, site):
    page, seen = open_page(browser, site / "index.html")
    page.locator("label.md-search__icon, .md-search__input").first.click()
    results = page.locator(".md-search-result__item")
    for _ in range(40):  # the index is built in a worker after load; a query typed before it is ready is dropped
        page.locator("input.md-search__input").fill("")
        page.locator("input.md-search__input").press_sequentially("softmax jacobian", delay=20)
        page.wait_for_timeout(500)
        if results.count():
            break
    assert results.count() >= 1
    assert "Saturation" in page.inner_text(".md-search-result") or "softmax" in page.inner_text(".md-search-result")
    results.first.locator("a").first.click()
    page.wait_for_load_state("load")
    assert page.url.startswith("file:") and ".html" in page.url
    assert seen == {"errors": [], "requests": []}
    page.close()


def test_every_page_loads_without_errors_or_requests(browser, site):
    for path in sorted(site.rglob("*.html")):
        if path.name == "404.html":
            continue
        page, seen = open_page(browser, path)
        assert seen == {"errors": [], "requests": []}, path.relative_to(site)
        page.close()
