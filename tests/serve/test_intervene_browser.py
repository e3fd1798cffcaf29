"""The trace page's interventions in a real headless Chromium (Playwright) against `qkv serve` on 127.0.0.1:
knock a head out by clicking its map, swap two tokens' K or V, watch the weights and the metric change, reset.
Oracles: the library run in this process (qkv.trace(text, interventions=[...]), lens.effect)."""

import re

import pytest

import qkv
from qkv import lens

from ..view.steady import STEADY, boxes
from .conftest import SENTENCE, XSS
from .test_browser import open_app, submit, table_weights

pytestmark = [pytest.mark.browser]

DOG = "The dog chased the ball because it was fast."
PREF = lens.preference("it", "cat", "mat")


def answered(page, n):
    page.wait_for_selector(f"body[data-iv='{n}']", timeout=30000)


def metric_numbers(page):
    """(plain, intervened, effect) read from the metric line."""
    text = page.inner_text("#iv-metric")
    m = re.search(r": ([+-]\d\.\d{4}) plain → ([+-]\d\.\d{4}) intervened \(effect ([+-]\d\.\d{4})\)", text)
    assert m, text
    return tuple(float(x) for x in m.groups())


def head(page, layer, h):
    return page.locator(f".map[aria-label='layer {layer} head {h}']")


def shown_weights(trace, layer, h, i):
    return [round(float(x), 3) for x in trace.attention(layer, h)[i]]


def test_knock_out_swap_and_reset(browser, served):
    page, seen = open_app(browser, served.url)
    plain = qkv.trace(SENTENCE)
    i, cat, mat = plain.index("it"), plain.index("cat"), plain.index("mat")
    assert "Alt-click a map" in page.inner_text("#iv-metric")
    assert page.input_value("#iv-prefer") == str(cat) and page.input_value("#iv-over") == str(mat)
    title = page.inner_text("#breakdown-title")
    still = boxes(page, (*STEADY, "#iv", "#iv-metric", "#iv-list"))

    # Alt-click a map: that head is knocked out (zero output), not selected; the view shows the intervened run
    head(page, 3, 1).click(modifiers=["Alt"])
    answered(page, 1)
    assert "iv-off" in head(page, 3, 1).get_attribute("class") and page.inner_text("#breakdown-title") == title
    assert page.locator(".map.iv-off").count() == 1
    assert boxes(page, (*STEADY, "#iv", "#iv-metric", "#iv-list")) == still  # nothing moves as runs come and go
    assert page.inner_text("#iv-list").startswith("zero-ablate L3 H1")
    assert page.inner_text("#summary").startswith("In the plain run (no interventions): ")
    ablated = qkv.trace(SENTENCE, interventions=[lens.ablate(3, 1)])
    effect = lens.effect(SENTENCE, [lens.ablate(3, 1)], PREF)
    base, value, change = metric_numbers(page)
    assert base == pytest.approx(effect.base, abs=1.5e-4) and value == pytest.approx(effect.value, abs=1.5e-4)
    assert change == pytest.approx(effect.effect, abs=1.5e-4) and abs(change) > 1e-3
    head(page, 4, 10).click()  # a plain click still selects: layer 4 reads what the ablated head no longer writes
    assert "in layer 4, head 10" in page.inner_text("#breakdown-title")
    assert table_weights(page) == pytest.approx(shown_weights(ablated, 4, 10, i), abs=1.5e-3)
    assert table_weights(page) != pytest.approx(shown_weights(plain, 4, 10, i), abs=1.5e-3)

    # the toggle: a plain click knocks out; clicking the knocked-out head again brings it back (the plain run,
    # which the page already has: no request)
    page.click("#iv-ko")
    assert page.get_attribute("#iv-ko", "aria-pressed") == "true"
    head(page, 3, 1).click()
    assert page.locator(".map.iv-off").count() == 0 and page.inner_text("#iv-list") == ""
    assert "Alt-click a map" in page.inner_text("#iv-metric") and page.get_attribute("body", "data-iv") == "1"
    assert table_weights(page) == pytest.approx(shown_weights(plain, 4, 10, i), abs=1.5e-3)
    page.click("#iv-ko")
    assert page.get_attribute("#iv-ko", "aria-pressed") == "false"

    # swap K of cat and mat in layer 2: where 'it' looks in layer 2 swaps between them
    page.select_option("#iv-step", "k")
    page.select_option("#iv-a", str(cat))
    page.select_option("#iv-b", str(mat))
    page.select_option("#iv-layer", "2")
    page.click("#iv-swap")
    answered(page, 2)
    head(page, 2, 4).click()
    w, w0 = table_weights(page), shown_weights(plain, 2, 4, i)
    assert (w[cat], w[mat]) == pytest.approx((w0[mat], w0[cat]), abs=1.5e-3) and w0[cat] != w0[mat]
    assert page.locator(".tok.iv-swapped").count() == 2
    swapped = lens.effect(SENTENCE, [lens.swap(2, "k", ("cat", "mat"))], PREF)
    assert metric_numbers(page)[1] == pytest.approx(swapped.value, abs=1.5e-4)

    # and V on top: the weights of layer 2 stay what swapping K made them; the metric moves again
    page.select_option("#iv-step", "v")
    page.click("#iv-swap")
    answered(page, 3)
    assert table_weights(page) == pytest.approx(w, abs=1.5e-3)
    both = lens.effect(SENTENCE, [lens.swap(2, "k", ("cat", "mat")), lens.swap(2, "v", ("cat", "mat"))], PREF)
    assert metric_numbers(page)[1] == pytest.approx(both.value, abs=1.5e-4)
    assert page.locator("#iv-list li").count() == 2

    # remove the first (K) with its ×: only V is left, and the layer's weights are the plain ones again
    page.locator("#iv-list li").first.locator("button").click()
    answered(page, 4)
    assert page.inner_text("#iv-list").startswith("swap v of 'cat' and 'mat' in L2")
    assert table_weights(page) == pytest.approx(w0, abs=1.5e-3)

    # a new query: the metric follows it (preference of 'because' for cat over mat)
    page.locator(".tok", has_text="because").first.click()
    answered(page, 5)
    assert "final['because']" in page.inner_text("#iv-metric")
    page.select_option("#iv-prefer", "")  # no pair: the metric is the sentence embedding's cosine to the plain one
    answered(page, 6)
    assert page.inner_text("#iv-metric").startswith("embedding_cosine = ")
    emb = lens.effect(SENTENCE, [lens.swap(2, "v", ("cat", "mat"))], lens.embedding_cosine())
    assert metric_numbers(page)[1] == pytest.approx(emb.value, abs=1.5e-4)

    # the same token twice is refused in the page, before any request
    page.select_option("#iv-b", str(cat))
    page.click("#iv-swap")
    assert "pick two different tokens" in page.inner_text("#iv-error")

    # reset: the plain run, no marks, no list, the idle line; no request needed
    page.click("#iv-reset")
    assert page.inner_text("#iv-list") == "" and page.locator(".tok.iv-swapped").count() == 0
    assert "Alt-click a map" in page.inner_text("#iv-metric") and page.is_hidden("#iv-error")
    assert not page.inner_text("#summary").startswith("In the plain run")
    assert table_weights(page) == pytest.approx(shown_weights(plain, 2, 4, plain.index("because")), abs=1.5e-3)
    assert boxes(page, (*STEADY, "#iv", "#iv-metric", "#iv-list")) == still

    # a new sentence clears the interventions
    head(page, 0, 0).click(modifiers=["Alt"])
    answered(page, 7)
    submit(page, DOG, int(page.get_attribute("body", "data-shown")) + 1)  # the view counts intervened runs too
    assert page.locator(".map.iv-off").count() == 0 and page.inner_text("#iv-list") == ""
    assert page.input_value("#iv-prefer") == "" and "dog" in page.inner_text("#iv-a")
    assert seen["errors"] == [] and seen["dialogs"] == [] and seen["outside"] == [], seen
    page.close()


def test_hostile_text_in_the_panel_is_text(browser, served):
    page, seen = open_app(browser, served.url)
    submit(page, XSS, 2)
    options = page.eval_on_selector_all("#iv-a option", "os => os.map(o => o.textContent)")
    assert options[3:10] == ["3: <", "4: /", "5: script", "6: >", "7: <", "8: script", "9: >"]  # text, not markup
    page.select_option("#iv-a", "1")
    page.select_option("#iv-b", "2")
    page.click("#iv-swap")
    answered(page, 1)
    assert page.locator("#iv-list li").count() == 1 and page.locator("img").count() == 0
    assert page.evaluate("() => window.__pwned") is None
    assert seen["errors"] == [] and seen["dialogs"] == [] and seen["outside"] == [], seen
    page.close()


def test_a_refused_change_keeps_the_run_on_screen(browser, served):
    page, seen = open_app(browser, served.url)
    head(page, 3, 1).click(modifiers=["Alt"])
    answered(page, 1)
    before = table_weights(page)
    refusal = "interventions[1] (swap): refused here to test the page"
    page.route(
        "**/api/intervene",
        lambda route: route.fulfill(status=422, content_type="application/json", body='{"error": "%s"}' % refusal),
    )
    page.click("#iv-swap")
    page.wait_for_selector("#iv-error:not([hidden])")
    assert page.inner_text("#iv-error") == refusal
    assert page.locator("#iv-list li").count() == 1 and page.inner_text("#iv-list").startswith("zero-ablate L3 H1")
    assert page.locator(".tok.iv-swapped").count() == 0 and table_weights(page) == before
    page.unroute("**/api/intervene")
    page.click("#iv-swap")  # the same change, now answered: the error goes
    answered(page, 2)
    assert page.is_hidden("#iv-error") and page.locator("#iv-list li").count() == 2
    assert [e for e in seen["errors"] if "status of 422" not in e] == [] and seen["outside"] == [], seen
    page.close()
