"""`qkv serve` in a real headless Chromium (Playwright): the running server on 127.0.0.1, started and stopped here.

Set QKV_SERVE_SCREENSHOT=path.png to also save the screenshot used in the README.
"""

import math
import os

import pytest
import torch

import qkv
from qkv.view.terminal import attention_summary

from .conftest import XSS

DOG = "The dog chased the ball because it was fast."

pytestmark = [
    pytest.mark.browser,
]


def open_app(browser, url):
    """Open the app; collect console errors, page errors, dialogs and every request that leaves ``url``."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(15000)
    seen = {"errors": [], "dialogs": [], "outside": [], "requests": 0}

    def on_request(r):
        seen["requests"] += 1
        if not r.url.startswith((url + "/", "data:")):
            seen["outside"].append(r.url)

    page.on("console", lambda m: m.type in ("error", "warning") and seen["errors"].append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: seen["errors"].append(f"pageerror: {e}"))
    page.on("dialog", lambda d: (seen["dialogs"].append(d.message), d.dismiss()))
    page.on("request", on_request)
    page.goto(url + "/")
    page.wait_for_selector("body[data-shown='1']", timeout=30000)
    return page, seen


def submit(page, text, shown):
    page.fill("#text", text)
    page.click("#go")
    page.wait_for_selector(f"body[data-shown='{shown}']", timeout=30000)


def readouts(page):
    t = page.inner_text("#scale-t")
    mx = float(page.inner_text("#scale-max").split()[2])
    ent = float(page.inner_text("#scale-entropy").split()[1])
    return t, mx, ent


def table_weights(page):
    return [
        float(x)
        for x in page.eval_on_selector_all("#breakdown-body tr td:nth-child(5)", "tds => tds.map(td => td.textContent)")
    ]


def map_pixels(page, label):
    return page.eval_on_selector(f".map[aria-label='{label}'] canvas", "c => c.toDataURL()")


def softmax_row(t, layer, head, i, scale):
    scaled = torch.tensor(t.to_dict(4)["layers"][layer]["scaled"][head][i], dtype=torch.float64)  # what the page has
    return torch.softmax(scale * scaled, dim=0)


def entropy(w):
    return float(-(w * w.clamp_min(1e-300).log()).sum())


def test_type_click_drag_and_read(browser, served):
    page, seen = open_app(browser, served.url)
    assert "'it'" in page.inner_text("#breakdown-title")  # the first trace: the essay's sentence, query 'it'

    submit(page, DOG, 2)  # type a sentence
    oracle = qkv.trace(DOG)
    assert page.locator(".tok").count() == len(oracle)
    assert page.locator(".map").count() == 6 * 12

    page.locator(".tok", has_text="dog").first.click()  # click a token: its breakdown, and the summary follows
    i = oracle.index("dog")
    assert f"'dog' (token {i})" in page.inner_text("#breakdown-title")
    page.wait_for_function(
        "s => document.getElementById('summary').textContent === s", arg=attention_summary(oracle, i)
    )

    page.locator(".map[aria-label='layer 3 head 5']").click()  # click a head
    assert "in layer 3, head 5" in page.inner_text("#breakdown-title")
    assert page.locator(".map.selected").get_attribute("aria-label") == "layer 3 head 5"
    w1 = oracle.attention(3, 5)[i]
    assert table_weights(page) == pytest.approx([round(float(x), 3) for x in w1], abs=1.5e-3)
    widths1 = [float(page.locator("#lines line").nth(j).get_attribute("stroke-width")) for j in range(len(oracle))]
    assert widths1 == pytest.approx([max(0.3, 14 * float(x)) for x in w1], abs=2e-3)
    t, mx, ent = readouts(page)
    assert t == "t = 1.00 (as trained)"
    assert mx == pytest.approx(float(w1.max()), abs=1e-3) and ent == pytest.approx(entropy(w1.double()), abs=1e-3)
    pixels1 = map_pixels(page, "layer 3 head 5")

    # drag the slider all the way right: t = sqrt(d) = sqrt(32), no scaling -> the row collapses onto one key
    box = page.locator("#scale").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2 * 0.8, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.75, box["y"] + box["height"] / 2, steps=5)
    page.mouse.move(box["x"] + box["width"] + 40, box["y"] + box["height"] / 2, steps=5)
    page.mouse.up()
    t, mx, ent = readouts(page)
    assert t == "t = 5.66 = √d (no scaling)"
    w_hot = softmax_row(oracle, 3, 5, i, math.sqrt(32))
    assert mx == pytest.approx(float(w_hot.max()), abs=2e-3) and ent == pytest.approx(entropy(w_hot), abs=2e-3)
    assert mx > float(w1.max()) and ent < entropy(w1.double())  # sharper: the claim, live
    assert table_weights(page) == pytest.approx(w_hot.tolist(), abs=2e-3)
    widths_hot = [float(page.locator("#lines line").nth(j).get_attribute("stroke-width")) for j in range(len(oracle))]
    assert widths_hot == pytest.approx([max(0.3, 14 * float(x)) for x in w_hot], abs=0.05)
    assert map_pixels(page, "layer 3 head 5") != pixels1  # the maps follow t
    assert "t = 5.66" in page.inner_text("#lines-title")

    page.locator("#scale").fill("-2")  # t = 1/4: flatter than the model
    t, mx, ent = readouts(page)
    w_cold = softmax_row(oracle, 3, 5, i, 0.25)
    assert t == "t = 0.25" and ent == pytest.approx(entropy(w_cold), abs=2e-3) and ent > entropy(w1.double())
    page.click("#scale-reset")
    assert readouts(page)[0] == "t = 1.00 (as trained)" and table_weights(page) == pytest.approx(
        [round(float(x), 3) for x in w1], abs=1.5e-3
    )

    for measure in ("values", "rollout", "weights"):  # switch weights / values / rollout
        page.locator(f".measure[data-measure='{measure}']").click()
        assert page.locator(f".measure[data-measure='{measure}']").get_attribute("aria-pressed") == "true"
        assert measure in page.inner_text("#lines-title")

    assert seen["errors"] == [] and seen["dialogs"] == [] and seen["outside"] == [], seen
    page.fill("#text", "  ")
    page.click("#go")
    assert "type a sentence first" in page.inner_text("#error")
    page.fill("#text", "word " * 80)
    page.click("#go")
    page.wait_for_selector("#error:not([hidden])")
    page.wait_for_function("() => document.getElementById('error').textContent.includes('tokens long')")
    assert "at most 64 tokens" in page.inner_text("#error")
    assert [e for e in seen["errors"] if "status of 422" not in e] == []  # Chromium logs the refused request
    seen["errors"].clear()

    shot = os.environ.get("QKV_SERVE_SCREENSHOT")
    if shot:
        submit(page, "The cat sat on the mat because it was tired.", 3)
        page.locator(".tok", has_text="it").first.click()
        page.locator(".map[aria-label='layer 3 head 1']").click()
        page.locator("#scale").fill("1.2")
        page.screenshot(path=shot, full_page=True)
    assert seen["errors"] == [] and seen["dialogs"] == [] and seen["outside"] == [], seen
    assert seen["requests"] >= 5
    page.close()


def test_hostile_text_is_shown_as_text(browser, served):
    page, seen = open_app(browser, served.url)
    submit(page, XSS, 2)
    assert page.evaluate("() => window.__pwned") is None
    assert page.locator("img").count() == 0
    srcs = page.eval_on_selector_all("script", "ss => ss.map(s => s.getAttribute('src'))")
    own = ["/static/view.js", "/static/api.js", "/static/app.js", "/static/intervene.js"]
    assert srcs == own  # the page's own, none from the text
    sentence = page.inner_text("#sentence").replace("\n", "").replace(" ", "")
    assert "<script>" in sentence and "</script>" in sentence and "onerror" in sentence
    page.locator(".tok", has_text="window").first.click()
    assert "'window'" in page.inner_text("#breakdown-title")
    assert "<script>" in page.title() or "script" in page.title()
    assert page.evaluate("() => window.__pwned") is None
    assert seen["errors"] == [] and seen["dialogs"] == [] and seen["outside"] == [], seen
    page.close()
