"""The HTML page in a real headless Chromium (Playwright), opened from disk via file://."""

import pytest

from qkv.view.html import write_html

from .conftest import XSS

pytestmark = pytest.mark.browser  # the browser fixture (conftest) skips without Chromium -- and fails under CI


def open_page(browser, path):
    """Open ``path``; collect console errors, page errors, dialogs and every non-file request."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(10000)
    seen = {"errors": [], "dialogs": [], "requests": []}
    page.on("console", lambda m: m.type in ("error", "warning") and seen["errors"].append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: seen["errors"].append(f"pageerror: {e}"))
    page.on("dialog", lambda d: (seen["dialogs"].append(d.message), d.dismiss()))
    page.on("request", lambda r: not r.url.startswith(("file:", "data:")) and seen["requests"].append(r.url))
    page.goto(path.as_uri())
    page.wait_for_selector("body[data-ready='1']", timeout=15000)
    return page, seen


def test_page_renders_maps_and_breakdown_after_a_click(browser, cat_trace, tmp_path):
    path = write_html(cat_trace, tmp_path / "explain.html", query="it", layer=5, head=11, summary="it -> cat")
    page, seen = open_page(browser, path)
    L = len(cat_trace)
    assert page.locator(".map").count() == 6 * 12
    # every map canvas has been drawn: its pixels are not all the default transparent black
    drawn = page.evaluate("""() => [...document.querySelectorAll('.map canvas')].map(c => {
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let s = 0; for (let i = 3; i < d.length; i += 4) s += d[i]; return s > 0; })""")
    assert drawn == [True] * 72
    assert page.locator("#lines line").count() == L
    assert page.locator(".map.selected").get_attribute("aria-label") == "layer 5 head 11"
    assert "'it' (token 8) in layer 5, head 11" in page.inner_text("#breakdown-title")

    page.locator(".tok", has_text="cat").first.click()  # click a token -> its breakdown
    assert "'cat' (token 2)" in page.inner_text("#breakdown-title")
    rows = page.locator("#breakdown-body tr")
    assert rows.count() == L
    w = cat_trace.attention(5, 11)[2]
    assert rows.nth(6).locator("td").nth(4).inner_text() == f"{float(w[6]):.3f}"

    page.locator(".map[aria-label='layer 2 head 3']").click()  # click a head -> lines and table follow it
    assert "layer 2, head 3" in page.inner_text("#lines-title")
    assert "in layer 2, head 3" in page.inner_text("#breakdown-title")
    widths = [float(page.locator("#lines line").nth(j).get_attribute("stroke-width")) for j in range(L)]
    expect = [max(0.3, 14 * round(float(x), 4)) for x in cat_trace.attention(2, 3)[2]]
    assert widths == pytest.approx(expect, abs=1e-3)  # thickness = weight

    for measure in ("values", "rollout", "weights"):
        page.locator(f".measure[data-measure='{measure}']").click()
        assert page.locator(f".measure[data-measure='{measure}']").get_attribute("aria-pressed") == "true"
        assert measure in page.inner_text("#lines-title")
    page.screenshot(path=str(tmp_path / "explain.png"), full_page=True)
    assert seen == {"errors": [], "dialogs": [], "requests": []}
    page.close()


def test_hostile_text_is_shown_as_text_and_never_runs(browser, xss_trace, tmp_path):
    path = write_html(xss_trace, tmp_path / "xss.html", query="it", summary=XSS)
    page, seen = open_page(browser, path)
    assert page.evaluate("() => window.__pwned") is None
    assert page.locator("img").count() == 0 and page.locator("script").count() == 2
    sentence = page.inner_text("#sentence").replace("\n", "")
    assert "<script>" in sentence.replace(" ", "") and "onerror" in sentence.replace(" ", "")
    assert page.inner_text("#summary") == XSS
    page.locator(".tok", has_text="window").first.click()
    assert "'window' (token 10)" in page.inner_text("#breakdown-title")
    assert page.evaluate("() => window.__pwned") is None
    assert seen == {"errors": [], "dialogs": [], "requests": []}
    page.close()
