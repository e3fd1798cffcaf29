"""Honest statistics for head-level probes: exact intervals, sign test, held-out selection, permutation null.

Everything is exact or Monte-Carlo with a seed, in plain ``math``/``numpy`` (no scipy):

* :func:`clopper_pearson` -- the exact binomial interval, by bisection on the binomial CDF;
* :func:`sign_test` -- the two-sided exact sign test (a binomial test at ``p = 1/2``);
* :func:`heldout` -- choose the best head on one half of the groups (twin pairs), score it on the
  other half, both ways, pooled: the figure best-of-K on the same data inflates; :func:`heldout_median`
  repeats it over many random splits and reports the median split;
* :func:`permutation_null` -- the best-of-heads accuracy against a null that swaps twin answers;
* :func:`twin_flips` -- how many heads change their pick between twins, and whether towards the answer.

Shape legend: ``K`` heads (layers x heads, flattened), ``M`` items, ``C`` candidates.

Example:
    >>> [round(x, 4) for x in clopper_pearson(7, 10)]
    [0.3475, 0.9333]
    >>> round(sign_test(9, 1), 4)
    0.0215
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import NamedTuple, Sequence

import numpy as np

__all__ = [
    "binom_cdf",
    "binom_sf",
    "clopper_pearson",
    "sign_test",
    "Accuracy",
    "accuracy",
    "best_head",
    "HeldOut",
    "heldout",
    "heldout_median",
    "split_groups",
    "permutation_null",
    "TwinStats",
    "twin_flips",
    "rankdata",
    "spearman",
    "Interval",
    "group_bootstrap",
    "mean_interval",
]


@lru_cache(maxsize=64)
def _log_comb(n: int) -> np.ndarray:
    """``log C(n, i)`` for ``i = 0..n`` (float64, from ``math.lgamma``)."""
    lg = np.array([math.lgamma(i + 1) for i in range(n + 1)])
    return lg[n] - lg - lg[::-1]


def _pmf_sum(lo: int, hi: int, n: int, p: float) -> float:
    """``sum_{i=lo..hi} P(X = i)`` for ``X ~ Binomial(n, p)``, ``0 <= lo <= hi <= n``."""
    if p <= 0.0:
        return 1.0 if lo == 0 else 0.0
    if p >= 1.0:
        return 1.0 if hi == n else 0.0
    i = np.arange(lo, hi + 1)
    terms = np.exp(_log_comb(n)[lo : hi + 1] + i * math.log(p) + (n - i) * math.log1p(-p))
    return min(1.0, math.fsum(terms.tolist()))


def binom_cdf(k: int, n: int, p: float) -> float:
    """``P(X <= k)`` for ``X ~ Binomial(n, p)`` (exact sum of the pmf, terms in log space)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    return _pmf_sum(0, int(k), int(n), p)


def binom_sf(k: int, n: int, p: float) -> float:
    """``P(X >= k)`` for ``X ~ Binomial(n, p)``."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    return _pmf_sum(int(k), int(n), int(n), p)


def _bisect(f, target: float, increasing: bool) -> float:
    """The ``p`` in [0, 1] with ``f(p) = target`` for a monotone ``f`` (to ~1e-15)."""
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if (f(mid) < target) == increasing:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


@lru_cache(maxsize=4096)
def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) two-sided interval for a binomial proportion ``k/n``.

    ``low`` solves ``P(X >= k; p) = alpha/2`` (0 when ``k = 0``), ``high`` solves ``P(X <= k; p) = alpha/2``
    (1 when ``k = n``), ``alpha = 1 - level`` -- the same as the Beta quantiles
    ``B(alpha/2; k, n-k+1)`` and ``B(1-alpha/2; k+1, n-k)``.
    """
    if not (isinstance(n, (int, np.integer)) and n >= 1 and 0 <= k <= n):
        raise ValueError(f"need 0 <= k <= n and n >= 1 (k successes of n trials), got k={k}, n={n}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), e.g. 0.95, got {level}")
    k, n, a = int(k), int(n), (1.0 - level) / 2
    low = 0.0 if k == 0 else _bisect(lambda p: binom_sf(k, n, p), a, increasing=True)
    high = 1.0 if k == n else _bisect(lambda p: binom_cdf(k, n, p), a, increasing=False)
    return low, high


def sign_test(plus: int, minus: int) -> float:
    """Two-sided exact sign test: ``P`` of a split at least this uneven when ``+`` and ``-`` are equally likely.

    Ties are dropped before (pass only the signed counts); ``1.0`` when there is nothing to test.
    """
    if plus < 0 or minus < 0:
        raise ValueError(f"sign_test needs counts >= 0, got plus={plus}, minus={minus}")
    n = plus + minus
    if n == 0:
        return 1.0
    k = min(plus, minus)
    return min(1.0, 2.0 * binom_cdf(k, n, 0.5))


class Accuracy(NamedTuple):
    """``correct`` of ``n`` with the exact 95 % interval."""

    correct: int
    n: int
    accuracy: float
    ci_low: float
    ci_high: float

    def to_dict(self) -> dict:
        return self._asdict()


def accuracy(correct: int, n: int, level: float = 0.95) -> Accuracy:
    """:class:`Accuracy` of ``correct`` out of ``n`` (``n >= 1``)."""
    lo, hi = clopper_pearson(int(correct), int(n), level)
    return Accuracy(int(correct), int(n), int(correct) / int(n), lo, hi)


def best_head(correct: np.ndarray) -> int:
    """Index of the head with the most correct items; ties go to the lowest index. ``(K, M) bool -> int``."""
    return int(np.argmax(np.asarray(correct).sum(1)))


def split_groups(groups: Sequence, seed: int = 0) -> np.ndarray:
    """``(M,)`` bool: items of a random half of the distinct ``groups`` (twins stay together).

    The distinct groups are shuffled with ``seed`` and alternately assigned, so the halves differ by at most one group.
    """
    names = list(dict.fromkeys(groups))
    order = np.random.default_rng(seed).permutation(len(names))
    first = {names[i] for i in order[::2]}
    return np.array([g in first for g in groups], dtype=bool)


class HeldOut(NamedTuple):
    """Held-out accuracy: the head chosen on one half, scored on the other, both ways, pooled.

    ``chosen``: ``[(k_chosen_on_A, train_accuracy_A), (k_chosen_on_B, train_accuracy_B)]`` (flat head indices).
    ``splits``: the pooled accuracy of every split tried (:func:`heldout_median`; one entry for :func:`heldout`).
    """

    score: Accuracy
    chosen: list[tuple[int, float]]
    seed: int
    splits: tuple[float, ...] = ()


def heldout(correct: np.ndarray, groups: Sequence, seed: int = 0, level: float = 0.95) -> HeldOut:
    """Select on one half, score on the other (twins in the same half), both ways, pooled.

    Args:
        correct: ``(K, M)`` bool, head ``k`` right on item ``m``.
        groups: ``M`` group labels (twin pair id; a lone item is its own group). Needs >= 2 groups.
        seed: the split (see :func:`split_groups`).
    """
    correct = np.asarray(correct, dtype=bool)
    if correct.ndim != 2 or correct.shape[1] != len(groups):
        raise ValueError(f"correct must be (K heads, M items) with M = {len(groups)} groups, got {correct.shape}")
    if len(set(groups)) < 2:
        raise ValueError(f"held-out selection needs at least 2 groups (pairs) of items, got {len(set(groups))}")
    half = split_groups(groups, seed)
    hits, chosen = 0, []
    for train, test in ((half, ~half), (~half, half)):
        k = best_head(correct[:, train])
        chosen.append((k, float(correct[k, train].mean())))
        hits += int(correct[k, test].sum())
    score = accuracy(hits, correct.shape[1], level)
    return HeldOut(score, chosen, seed, (score.accuracy,))


def heldout_median(
    correct: np.ndarray, groups: Sequence, seed: int = 0, splits: int = 21, level: float = 0.95
) -> HeldOut:
    """:func:`heldout` over ``splits`` random splits (seeds ``seed .. seed + splits - 1``); the median split.

    One split's figure depends on which pairs land in which half; the split whose accuracy is the (lower) median
    is reported, with its interval, and ``splits`` lists every split's accuracy so the spread is visible.
    """
    if splits < 1:
        raise ValueError(f"splits must be >= 1, got {splits}")
    runs = [heldout(correct, groups, s, level) for s in range(seed, seed + splits)]
    order = sorted(range(splits), key=lambda i: (runs[i].score.accuracy, i))
    mid = runs[order[(splits - 1) // 2]]
    return mid._replace(splits=tuple(r.score.accuracy for r in runs))


def _null_answers(
    answers: np.ndarray,
    n_candidates: np.ndarray,
    twins: Sequence[tuple[int, int]],
    rounds: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """``(R, M)`` answers under the null: twin pairs swap answers with probability 1/2; lone items draw one."""
    M = len(answers)
    out = np.floor(rng.random((rounds, M)) * n_candidates[None, :]).astype(np.int64)  # lone items: uniform
    if twins:
        i, j = np.array(twins, dtype=np.int64).T  # (P,)
        swap = rng.random((rounds, len(i))) < 0.5
        out[:, i] = np.where(swap, answers[j], answers[i])
        out[:, j] = np.where(swap, answers[i], answers[j])
    return out


def permutation_null(
    preds: np.ndarray,
    answers: Sequence[int],
    n_candidates: Sequence[int],
    twins: Sequence[tuple[int, int]] = (),
    rounds: int = 1000,
    seed: int = 0,
) -> tuple[float, float, np.ndarray]:
    """``p`` of the best-of-heads accuracy under a null where heads do not see the answer.

    Under the null each twin pair's two answers are swapped with probability 1/2 (the head's picks stay):
    a head that ignores which word was changed is as right on the swapped labels as on the real ones. Items
    without a twin get an answer drawn uniformly from their candidates.

    Args:
        preds: ``(K, M)`` int, the candidate each head picks on each item.
        answers: ``(M,)`` the right candidate. n_candidates: ``(M,)``.
        twins: pairs ``(i, j)`` of item indices (disjoint).
        rounds: Monte-Carlo draws ``R``.

    Returns:
        ``(observed best accuracy, p, null (R,))`` with ``p = (1 + #{null >= observed}) / (1 + R)``.
    """
    preds, answers = np.asarray(preds), np.asarray(answers, dtype=np.int64)
    n_candidates = np.asarray(n_candidates, dtype=np.int64)
    observed = float((preds == answers[None, :]).mean(1).max())
    rng = np.random.default_rng(seed)
    null = np.empty(rounds)
    for start in range(0, rounds, 100):  # bounded memory: (100, K, M) at a time
        r = min(100, rounds - start)
        a = _null_answers(answers, n_candidates, twins, r, rng)  # (r, M)
        null[start : start + r] = (preds[None, :, :] == a[:, None, :]).mean(2).max(1)
    p = (1 + int((null >= observed - 1e-12).sum())) / (1 + rounds)
    return observed, p, null


class TwinStats(NamedTuple):
    """Twin analysis over ``pairs`` twin pairs and ``K`` heads.

    ``mean_flips``: heads (of ``K``) whose pick differs between the twins, averaged over pairs.
    ``flips_right``/``flips_wrong``: (pair, head) flips that land on both answers / on both wrong ones.
    ``toward_right``/``toward_wrong``: pairs whose heads flip more often towards / away from the answers;
    ``sign_test_p``: the two-sided sign test of those two counts (pairs with a tie are dropped).
    """

    pairs: int
    heads: int
    mean_flips: float
    flips_right: int
    flips_wrong: int
    toward_right: int
    toward_wrong: int
    sign_test_p: float

    def to_dict(self) -> dict:
        return self._asdict()


def twin_flips(preds: np.ndarray, answers: Sequence[int], twins: Sequence[tuple[int, int]]) -> TwinStats:
    """Count heads whose pick flips between twins and where the flips go (see :class:`TwinStats`).

    ``preds`` ``(K, M)`` picks, ``answers`` ``(M,)``, ``twins`` pairs ``(i, j)`` with different answers.
    """
    preds, answers = np.asarray(preds), np.asarray(answers)
    K = preds.shape[0]
    if not twins:
        return TwinStats(0, K, 0.0, 0, 0, 0, 0, 1.0)
    i, j = np.array(twins, dtype=np.int64).T
    flip = preds[:, i] != preds[:, j]  # (K, P)
    right = flip & (preds[:, i] == answers[i]) & (preds[:, j] == answers[j])
    wrong = flip & (preds[:, i] != answers[i]) & (preds[:, j] != answers[j])
    r, w = right.sum(0), wrong.sum(0)  # (P,) per pair
    up, down = int((r > w).sum()), int((w > r).sum())
    return TwinStats(
        len(twins), K, float(flip.sum(0).mean()), int(r.sum()), int(w.sum()), up, down, sign_test(up, down)
    )


# ------------------------------------------------------------------------------ means and ranks (interventions)
def rankdata(x) -> np.ndarray:
    """Ranks 1..n with ties given their average rank (as ``scipy.stats.rankdata``); 1-D."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    edges = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1], True])  # start of each run of ties, and n
    ranks = np.repeat((edges[:-1] + edges[1:] - 1) / 2.0 + 1.0, np.diff(edges))
    out = np.empty(len(x), dtype=np.float64)
    out[order] = ranks
    return out


def spearman(x, y) -> float:
    """Spearman rank correlation (Pearson of average ranks); 0.0 when either side is constant.

    Example:
        >>> spearman([1, 2, 3, 4], [1, 4, 9, 16]), spearman([1, 2, 3], [3, 2, 1])
        (1.0, -1.0)
    """
    rx, ry = rankdata(x), rankdata(y)
    if len(rx) != len(ry):
        raise ValueError(f"spearman needs two sequences of one length, got {len(rx)} and {len(ry)}")
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = math.sqrt(float((rx**2).sum() * (ry**2).sum()))
    return 0.0 if den == 0 else float((rx * ry).sum() / den)


class Interval(NamedTuple):
    """A statistic with a percentile-bootstrap interval: ``value [low, high]`` over ``n`` units."""

    value: float
    low: float
    high: float
    n: int

    def to_dict(self) -> dict:
        return {"value": self.value, "ci_low": self.low, "ci_high": self.high, "n": self.n}


def group_bootstrap(groups: Sequence, rounds: int = 1000, seed: int = 0) -> np.ndarray:
    """``(rounds, M)`` item indices of bootstrap resamples that draw whole groups (twins stay together)."""
    names = list(dict.fromkeys(groups))
    members = [np.flatnonzero(np.array([g == n for g in groups])) for n in names]
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(names), size=(rounds, len(names)))
    return [np.concatenate([members[i] for i in row]) for row in picks]


def mean_interval(values: np.ndarray, groups: Sequence, rounds: int = 1000, seed: int = 0, level: float = 0.95):
    """Per column of ``values`` ``(M, K)`` the mean over items with a percentile-bootstrap interval that resamples
    whole ``groups``; returns ``(mean (K,), low (K,), high (K,))``."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    if values.shape[0] != len(groups) or values.shape[0] < 1:
        raise ValueError(f"values must be (M items, K) with M = {len(groups)} groups given, got {values.shape}")
    boots = np.stack([values[idx].mean(0) for idx in group_bootstrap(groups, rounds, seed)])  # (rounds, K)
    a = (1.0 - level) / 2
    return values.mean(0), np.quantile(boots, a, axis=0), np.quantile(boots, 1 - a, axis=0)
