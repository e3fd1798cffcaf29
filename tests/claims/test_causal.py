"""Claims 4 and 5 causally (qkv.claims.causal) on a few twin items: swapping K negates layer 0's weight difference
exactly, swapping V keeps layer 0's weights, and the output preference equals the lens's metric on the same runs."""

import numpy as np
import pytest

from qkv import lens
from qkv.claims.causal import swap_effects
from qkv.lens.probe_io import load_twins


@pytest.fixture(scope="module")
def four(minilm):
    items = load_twins().items[:4]
    return items, swap_effects(minilm, items, rounds=200)


def test_swaps_hold_their_exact_invariants_in_layer_0(four):
    _, r = four
    f = r.figures()
    assert f["items"] == 4 and f["layer0_k_negates"] == 1.0 and f["layer0_v_keeps"] == 1.0
    np.testing.assert_allclose(r.look0[:, 1], -r.look0[:, 0], atol=1e-5)
    lo, mean, hi = (f["prefer_effect"]["swap_v"][k] for k in ("ci_low", "mean", "ci_high"))
    assert lo <= mean <= hi


def test_output_preference_equals_the_lens_metric(four, minilm):
    items, r = four
    it = items[0]  # "The cat sat on the mat because it was tired.": answer cat
    m = lens.preference("it", "cat", "mat")
    plain = lens.effect(it.text, [], m, minilm)
    swapped = lens.effect(it.text, [lens.swap(None, "k", ("cat", "mat"))], m, minilm)
    assert abs(plain.base - r.prefer[0, 0]) < 1e-5 and abs(swapped.value - r.prefer[0, 1]) < 1e-5
    assert "swapping K" in r.sentence("coreference") and "swapping V" in r.sentence("decoupling")
    assert r.figures()["k_v_max_difference"] < 1e-4 and "cannot be separated" in r.sentence("decoupling")
