"""qkv.lens.stats and the probe's analysis against scipy (test-only), closed forms and planted data."""

import itertools
import math

import numpy as np
import pytest

from qkv.lens import stats
from qkv.lens.probe_io import Item, Span
from qkv.lens.probing import ABOVE_CHANCE, NO_EVIDENCE, TRACKS, analyse

scipy_stats = pytest.importorskip("scipy.stats")

CASES = [(0, 1), (1, 1), (0, 10), (3, 10), (7, 10), (10, 10), (48, 96), (60, 96), (1, 273), (177, 273), (500, 1000)]


@pytest.mark.parametrize("k,n", CASES)
def test_clopper_pearson_matches_scipy_and_beta_quantiles(k, n):
    lo, hi = stats.clopper_pearson(k, n)
    ci = scipy_stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    assert lo == pytest.approx(ci.low, abs=1e-9) and hi == pytest.approx(ci.high, abs=1e-9)
    beta_lo = 0.0 if k == 0 else scipy_stats.beta.ppf(0.025, k, n - k + 1)
    beta_hi = 1.0 if k == n else scipy_stats.beta.ppf(0.975, k + 1, n - k)
    assert (lo, hi) == pytest.approx((beta_lo, beta_hi), abs=1e-9)


def test_clopper_pearson_closed_forms_and_errors():
    # k = 0: the upper end solves (1 - p)^n = alpha/2 exactly; k = n mirrors it
    n = 20
    assert stats.clopper_pearson(0, n)[1] == pytest.approx(1 - 0.025 ** (1 / n), abs=1e-12)
    assert stats.clopper_pearson(n, n)[0] == pytest.approx(0.025 ** (1 / n), abs=1e-12)
    assert stats.clopper_pearson(3, 10, level=0.99)[0] < stats.clopper_pearson(3, 10)[0]
    with pytest.raises(ValueError, match="0 <= k <= n"):
        stats.clopper_pearson(11, 10)
    with pytest.raises(ValueError, match="level"):
        stats.clopper_pearson(1, 10, level=95)


@pytest.mark.parametrize("k,n,p", [(0, 5, 0.3), (3, 10, 0.5), (40, 96, 0.5), (12, 30, 0.01), (29, 30, 0.99)])
def test_binomial_cdf_and_sf_match_scipy(k, n, p):
    assert stats.binom_cdf(k, n, p) == pytest.approx(scipy_stats.binom.cdf(k, n, p), rel=1e-10, abs=1e-300)
    assert stats.binom_sf(k, n, p) == pytest.approx(scipy_stats.binom.sf(k - 1, n, p), rel=1e-10, abs=1e-300)


@pytest.mark.parametrize("plus,minus", [(9, 1), (1, 9), (5, 5), (26, 17), (0, 12), (30, 0), (3, 4)])
def test_sign_test_matches_scipy(plus, minus):
    assert stats.sign_test(plus, minus) == pytest.approx(
        scipy_stats.binomtest(plus, plus + minus, 0.5).pvalue, rel=1e-10
    )


def test_sign_test_closed_forms():
    assert stats.sign_test(9, 1) == pytest.approx(2 * 11 / 1024)
    assert stats.sign_test(10, 0) == pytest.approx(2 / 1024)
    assert stats.sign_test(0, 0) == 1.0 and stats.sign_test(4, 4) == 1.0
    with pytest.raises(ValueError, match="counts >= 0"):
        stats.sign_test(-1, 3)


def twin_data(P: int):
    """P twin pairs: items 2p (answer 0) and 2p + 1 (answer 1), two candidates each."""
    answers = np.array([0, 1] * P)
    twins = [(2 * p, 2 * p + 1) for p in range(P)]
    return answers, twins


def test_permutation_null_matches_exact_enumeration():
    P, K = 8, 3
    answers, twins = twin_data(P)
    rng = np.random.default_rng(1)
    preds = rng.integers(0, 2, size=(K, 2 * P))
    preds[0] = answers  # one head right everywhere: the best-of-heads figure is 1.0
    preds[0, :3] = 1 - answers[:3]
    observed = (preds == answers).mean(1).max()
    null = []
    for swap in itertools.product([False, True], repeat=P):
        a = answers.copy()
        for (i, j), s in zip(twins, swap):
            if s:
                a[i], a[j] = answers[j], answers[i]
        null.append((preds == a).mean(1).max())
    exact = np.mean(np.array(null) >= observed - 1e-12)
    got_obs, p, draws = stats.permutation_null(preds, answers, [2] * (2 * P), twins, rounds=20000, seed=3)
    assert got_obs == pytest.approx(observed)
    assert draws.shape == (20000,)
    assert abs(p - exact) < 4 * math.sqrt(exact * (1 - exact) / 20000) + 1e-3


def test_permutation_null_of_first_noun_heads_is_one():
    answers, twins = twin_data(30)
    preds = np.zeros((5, 60), dtype=int)  # every head picks the first noun: the swap cannot change a thing
    obs, p, null = stats.permutation_null(preds, answers, [2] * 60, twins, rounds=200)
    assert obs == 0.5 and p == 1.0 and np.all(null == 0.5)


def test_heldout_finds_a_planted_head_and_scores_it_out_of_sample():
    P, K = 60, 72
    answers, _ = twin_data(P)
    rng = np.random.default_rng(0)
    preds = rng.integers(0, 2, size=(K, 2 * P))
    preds[17] = np.where(rng.random(2 * P) < 0.9, answers, 1 - answers)
    groups = [i // 2 for i in range(2 * P)]
    ho = stats.heldout(preds == answers, groups, seed=0)
    assert [k for k, _ in ho.chosen] == [17, 17]
    assert ho.score.n == 2 * P and ho.score.ci_low > 0.7
    half = stats.split_groups(groups, seed=0)
    assert all(half[2 * p] == half[2 * p + 1] for p in range(P))  # twins stay in one half
    assert abs(int(half.sum()) - P) <= 1


def test_heldout_median_reports_the_median_split():
    P, K = 30, 20
    answers, _ = twin_data(P)
    correct = np.random.default_rng(7).integers(0, 2, size=(K, 2 * P)) == answers
    groups = [i // 2 for i in range(2 * P)]
    runs = [stats.heldout(correct, groups, s).score.accuracy for s in range(3, 3 + 9)]
    ho = stats.heldout_median(correct, groups, seed=3, splits=9)
    assert ho.splits == tuple(runs) and ho.score.accuracy == sorted(runs)[4]
    assert ho.score == stats.heldout(correct, groups, ho.seed).score and 3 <= ho.seed < 12
    with pytest.raises(ValueError, match="splits must be >= 1"):
        stats.heldout_median(correct, groups, splits=0)


def test_heldout_corrects_the_best_of_many_bias():
    # 72 coin-flipping heads: the best one looks good on all the data, held out it is back near 50 %
    P, K = 50, 72
    answers, _ = twin_data(P)
    preds = np.random.default_rng(5).integers(0, 2, size=(K, 2 * P))
    correct = preds == answers
    best = correct.mean(1).max()
    ho = stats.heldout(correct, [i // 2 for i in range(2 * P)])
    assert best > 0.6 and ho.score.accuracy < best and ho.score.ci_low < 0.5
    with pytest.raises(ValueError, match="at least 2 groups"):
        stats.heldout(correct, [0] * (2 * P))


def test_twin_flips_counts_and_sign_test():
    answers, twins = twin_data(4)
    preds = np.array(
        [
            [0, 1, 0, 1, 1, 0, 0, 0],  # flips right, right, wrong, none
            [0, 0, 0, 1, 0, 1, 1, 0],
        ]
    )  # none, right, right, wrong
    w = stats.twin_flips(preds, answers, twins)
    assert (w.pairs, w.heads, w.flips_right, w.flips_wrong) == (4, 2, 4, 2)
    assert w.mean_flips == pytest.approx(6 / 4)
    # per pair right - wrong: +1, +2, 0 (one each), -1 -> 2 toward, 1 away
    assert (w.toward_right, w.toward_wrong) == (2, 1)
    assert w.sign_test_p == pytest.approx(scipy_stats.binomtest(2, 3, 0.5).pvalue)


# ------------------------------------------------------------------------------- analyse on constructed scores
def items_for(P: int) -> list[Item]:
    """Twin-balanced items: "A ... B ... it" with the answer alternating between the twins."""
    text = "The cat saw the dog and it ran."
    q, a, b = Span("it", 24, 26), Span("The cat", 0, 7), Span("the dog", 12, 19)
    return [Item(f"p{p}-{t}", text, q, (a, b), t, f"p{p}") for p in range(P) for t in (0, 1)]


def scores_for(items, planted: float | None, N=3, H=4, seed=0, noise=1.0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for it in items:
        s = rng.random((N, H, 2)) * noise
        s[..., 0] += 0.3  # every head leans to the first noun (always picks it when noise < 0.3)
        if planted is not None:
            right = rng.random() < planted
            s[1, 2, it.answer if right else 1 - it.answer] = 2.0  # layer 1 head 2 tracks the referent
            s[1, 2, 1 - it.answer if right else it.answer] = 0.0
        out.append(s)
    return out


def test_analyse_calls_a_planted_head_a_tracker():
    items = items_for(50)
    r = analyse(scores_for(items, planted=0.9), items, rounds=500)
    assert r.ranked()[0][:2] == (1, 2)
    assert [r.head(k) for k, _ in r.heldout.chosen] == [(1, 2), (1, 2)]
    assert r.verdict == TRACKS and r.null_p < 0.01
    # with 11 coin-flipping heads the flips as a whole go nowhere; with 11 first-noun heads only the tracker flips
    r = analyse(scores_for(items, planted=0.9, noise=0.2), items, rounds=500)
    assert r.ranked()[0][:2] == (1, 2)
    assert [r.head(k) for k, _ in r.heldout.chosen] == [(1, 2), (1, 2)]
    assert r.baselines["first"]["accuracy"] == 0.5 and r.baselines["nearest"]["accuracy"] == 0.5
    assert r.verdict == TRACKS and r.null_p < 0.01
    assert r.twins.toward_right > r.twins.toward_wrong and r.twins.sign_test_p < 1e-6
    d = r.to_dict()
    assert d["heads"][0]["layer"] == 1 and d["heads"][0]["head"] == 2 and d["verdict"] == TRACKS
    assert set(d) >= {"items", "heads", "baselines", "heldout", "mean_over_heads", "null", "twins", "verdict"}


def test_a_first_noun_head_scores_half_and_is_never_a_tracker():
    items = items_for(50)
    scores = scores_for(items, planted=None)
    for s in scores:
        s[0, 0] = [1.0, 0.0]  # layer 0 head 0: always the first noun, sharply
    r = analyse(scores, items, rounds=300)
    assert r.heads[0].accuracy == 0.5
    assert r.verdict != TRACKS


def test_analyse_above_chance_but_not_the_first_noun_baseline():
    # not twin-balanced: the answer is the first noun in 80 % of items; a first-noun head gets 80 %,
    # clears chance but not the "first" baseline
    text = "The cat saw the dog and it ran."
    q, a, b = Span("it", 24, 26), Span("The cat", 0, 7), Span("the dog", 12, 19)
    items = [Item(f"i{i}", text, q, (a, b), int(i % 5 == 0)) for i in range(200)]
    scores = [np.tile(np.array([1.0, 0.0]), (2, 2, 1)) for _ in items]
    r = analyse(scores, items, rounds=100)
    assert r.heldout.score.accuracy == 0.8 and r.baselines["first"]["accuracy"] == 0.8
    assert r.verdict == ABOVE_CHANCE and "first" in r.reason


def test_analyse_chance_and_errors():
    items = items_for(20)
    r = analyse(scores_for(items, planted=None, seed=2), items, rounds=100)
    assert r.verdict in (NO_EVIDENCE, ABOVE_CHANCE) and r.verdict != TRACKS
    with pytest.raises(ValueError, match="no usable items"):
        analyse([], [])
    with pytest.raises(ValueError, match="scores for 1 items but 40"):
        analyse(scores_for(items, None)[:1], items)
