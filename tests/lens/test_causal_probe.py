"""The causal probe against its parts: per-item effects equal a sweep of that item alone; the statistics equal
their direct computation; attribution estimates are first-order exact (finite differences)."""

import numpy as np
import pytest

from qkv.lens import stats, sweeps
from qkv.lens.causal_probe import causal_probe
from qkv.lens.effects import Preference
from qkv.lens.probe_io import load_twins


@pytest.fixture(scope="module")
def four(minilm):
    items = load_twins().items[:4]  # two twin pairs
    return items, causal_probe(items, minilm, rounds=200, splits=3, attribution=True)


def test_item_effects_equal_a_sweep_of_that_item(four, minilm):
    items, r = four
    assert r.effects.shape == (4, 72) and r.base.shape == (4,) and r.weight_pref.shape == (4, 72)
    it = items[1]  # "The cat sat on the mat because it was soft.": answer mat
    m = Preference("it", "mat", "cat")
    grid = sweeps.ablation_sweep(it.text, m, minilm)
    assert abs(grid.base - r.base[1]) < 1e-6
    np.testing.assert_allclose(grid.effects.ravel(), r.effects[1], atol=1e-5)


def test_statistics_are_their_direct_computation(four):
    _, r = four
    mean, lo, hi = r.head_means()
    np.testing.assert_allclose(mean, r.effects.mean(0))
    assert np.all(lo <= mean + 1e-12) and np.all(mean <= hi + 1e-12)
    rho = r.correlation()
    assert rho.value == pytest.approx(stats.spearman(r.weight_pref.mean(0), -r.effects.mean(0)))
    op = r.output_preference()
    assert op["correct"] == int((r.base > 0).sum()) and op["twin_pairs"] == 2
    ho = r.heldout()
    assert ho["n"] == 4 and len(ho["heads_chosen"]) == 2
    assert r.to_dict()["attribution"]["spearman_head_means"] > 0.5  # first order tracks exact ablation


def test_spearman_and_group_bootstrap():
    assert stats.spearman([1, 2, 3, 4], [10, 20, 30, 25]) == pytest.approx(0.8)
    assert stats.spearman([1, 1, 1], [1, 2, 3]) == 0.0
    mean, lo, hi = stats.mean_interval(np.array([1.0, 1.0, 3.0, 3.0]), ["a", "a", "b", "b"], rounds=500)
    assert mean[0] == 2.0 and 1.0 <= lo[0] <= 2.0 <= hi[0] <= 3.0
    with pytest.raises(ValueError, match="M = 3"):
        stats.mean_interval(np.zeros((2, 1)), ["a", "b", "c"])
