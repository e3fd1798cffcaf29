"""The scaling slider of the static page (`qkv explain --html`): softmax(t * scaled) recomputed in the page."""

import math

import pytest
import torch

from qkv.lens.trace import Trace
from qkv.view.html import extract_json, masked_keys, render_html, write_html


def _causal() -> Trace:
    """4 tokens, 1 layer, 1 head, causal: token i sees keys 0..i (weights exactly 0 above the diagonal)."""
    scaled = torch.tensor(
        [[0.0, 0.0, 0.0, 0.0], [2.0, 0.0, 0.0, 0.0], [1.0, 3.0, 0.0, 0.0], [0.5, 2.5, 1.0, 0.0]]
    ).view(1, 1, 4, 4)  # (N=1, H=1, L=4, L=4); upper part unused
    masked = torch.triu(torch.ones(4, 4, dtype=torch.bool), 1)
    w = torch.softmax(scaled.masked_fill(masked, float("-inf")), -1)
    return Trace.from_tensors(
        "a b c d",
        list("abcd"),
        weights=w,
        scaled=scaled,
        scores=scaled * 4,
        offsets=[(0, 1), (2, 3), (4, 5), (6, 7)],
        model={"head_dim": 16},
    )


def test_masked_keys_are_the_never_attended_ones(cat_trace):
    assert masked_keys(_causal()) == [[1, 2, 3], [2, 3], [3], []]
    assert masked_keys(cat_trace) == [[] for _ in cat_trace.tokens]  # an encoder masks nothing
    assert extract_json(render_html(_causal()))["masked"] == [[1, 2, 3], [2, 3], [3], []]


def test_page_has_the_slider_and_the_claim():
    page = render_html(_causal())
    assert 'id="scale"' in page and 'type="range"' in page and "claim 2" in page


def _open(browser, path):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors = []
    page.on("console", lambda m: m.type in ("error", "warning") and errors.append(m.text))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(path.as_uri())
    page.wait_for_selector("body[data-ready='1']")
    return page, errors


def _readouts(page):
    return (
        page.inner_text("#scale-t"),
        float(page.inner_text("#scale-max").split()[2]),
        float(page.inner_text("#scale-entropy").split()[1]),
    )


def _weights(page):
    return [
        float(x)
        for x in page.eval_on_selector_all("#breakdown-body tr td:nth-child(5)", "tds => tds.map(td => td.textContent)")
    ]


def _entropy(w):
    return float(-(w * w.clamp_min(1e-300).log()).sum())


@pytest.mark.browser
@pytest.mark.parametrize("t_log2", [-2.0, 1.0, 2.5])
def test_static_page_slider_matches_softmax_of_scaled(browser, cat_trace, tmp_path, t_log2):
    path = write_html(cat_trace, tmp_path / "e.html", query="it", layer=3, head=1)
    page, errors = _open(browser, path)
    w1 = cat_trace.attention(3, 1)[8].double()
    t, mx, ent = _readouts(page)
    assert t == "t = 1.00 (as trained)" and mx == pytest.approx(float(w1.max()), abs=1e-3)
    assert ent == pytest.approx(_entropy(w1), abs=1e-3)
    page.locator("#scale").fill(str(t_log2))
    scale = 2**t_log2
    scaled = torch.tensor(cat_trace.to_dict(4)["layers"][3]["scaled"][1][8], dtype=torch.float64)
    wt = torch.softmax(scale * scaled, 0)
    t, mx, ent = _readouts(page)
    assert t.startswith(f"t = {scale:.2f}") and (t_log2 < 2.5 or t.endswith("= √d (no scaling)"))
    assert mx == pytest.approx(float(wt.max()), abs=2e-3) and ent == pytest.approx(_entropy(wt), abs=2e-3)
    assert _weights(page) == pytest.approx(wt.tolist(), abs=2e-3)
    # sharper above t = 1, flatter below: the essay's claim 2, monotone in t
    assert (ent < _entropy(w1)) == (scale > 1)
    assert errors == []
    page.close()


@pytest.mark.browser
def test_slider_keeps_masked_keys_at_zero(browser, tmp_path):
    path = write_html(_causal(), tmp_path / "c.html", query=2, layer=0, head=0)
    page, errors = _open(browser, path)
    page.locator("#scale").fill("-2")  # t = 1/4: unmasked keys flatten, masked ones stay at 0
    w = torch.softmax(0.25 * torch.tensor([1.0, 3.0, 0.0]), 0)
    assert _weights(page) == pytest.approx([*w.tolist(), 0.0], abs=1e-3)
    assert float(page.inner_text("#scale-entropy").split()[1]) == pytest.approx(_entropy(w.double()), abs=1e-3)
    assert f"(uniform {math.log(3):.3f})" in page.inner_text("#scale-entropy")
    assert errors == []
    page.close()
