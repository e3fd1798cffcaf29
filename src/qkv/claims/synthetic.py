"""Claims 1 and 2 on synthetic data, where the closed form is known.

For ``d_k`` in :data:`DIMS` draw unit-normal queries and keys, ``rows`` queries against ``keys`` keys
each. With independent ``q_i, k_i ~ N(0, 1)``::

    E[q.k] = 0,   Var[q.k] = sum_i E[q_i^2] E[k_i^2] = d_k,   Var[q.k / sqrt(d_k)] = 1

so ``log Var`` against ``log d_k`` is a line of slope 1. The same rows, softmaxed with and without the
``1/sqrt(d_k)`` scale, show whether unscaled scores saturate softmax (max weight -> 1, entropy -> 0) and
shrink its gradient (``||diag(p) - p p^T||_F -> 0``).

Example:
    >>> s = synthetic_scores(dims=(4, 64), rows=512, keys=8, seed=0)
    >>> [round(r.var_raw / r.d_k, 1) for r in s.rows], round(s.slope, 1)
    ([1.0, 1.0], 1.0)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from .measures import entropy, loglog_slope, max_weight, softmax_jacobian_norm

__all__ = ["DIMS", "SyntheticRow", "SyntheticResult", "synthetic_scores", "softmax_summary", "sample_scores"]

DIMS = tuple(2**i for i in range(2, 11))  # 4, 8, ..., 1024


@dataclass(frozen=True)
class SyntheticRow:
    """Measurements at one ``d_k`` (means over the ``rows`` queries).

    ``var_raw``/``var_scaled``: variance of ``q.k`` and ``q.k/sqrt(d_k)`` over all scores;
    ``max_*``, ``entropy_*`` (nats), ``jacobian_*`` (``||diag(p) - p p^T||_F``): softmax of the raw
    (``unscaled``) and ``scaled`` scores.
    """

    d_k: int
    var_raw: float
    var_scaled: float
    max_unscaled: float
    max_scaled: float
    entropy_unscaled: float
    entropy_scaled: float
    jacobian_unscaled: float
    jacobian_scaled: float


@dataclass(frozen=True)
class SyntheticResult:
    """All rows and the log-log fit ``log var_raw = slope * log d_k + intercept``."""

    rows: tuple[SyntheticRow, ...]
    slope: float
    intercept: float
    n_rows: int
    n_keys: int
    seed: int

    def at(self, d_k: int) -> SyntheticRow:
        """The row measured at ``d_k`` (ValueError if it was not measured)."""
        for r in self.rows:
            if r.d_k == d_k:
                return r
        raise ValueError(f"d_k={d_k} was not measured; measured {[r.d_k for r in self.rows]}")

    def to_dict(self) -> dict:
        return {
            "slope": self.slope,
            "intercept": self.intercept,
            "rows": [asdict(r) for r in self.rows],
            "n_rows": self.n_rows,
            "n_keys": self.n_keys,
            "seed": self.seed,
        }


def sample_scores(d_k: int, rows: int, keys: int, seed: int, chunk: int = 256) -> Tensor:
    """Raw scores ``q.k`` ``(rows, keys)`` (float64) of unit-normal ``q`` ``(rows, d_k)``, ``k`` ``(rows, keys, d_k)``.

    Drawn in chunks of ``chunk`` queries (bounded memory at ``d_k = 1024``) from a generator seeded
    with ``seed`` and ``d_k``, so each ``d_k`` gets the same numbers whatever else is measured.
    """
    if d_k < 1 or rows < 2 or keys < 2:
        raise ValueError(f"need d_k >= 1, rows >= 2 and keys >= 2, got d_k={d_k}, rows={rows}, keys={keys}")
    gen = torch.Generator().manual_seed(seed * 100_003 + d_k)
    out = []
    for start in range(0, rows, chunk):
        n = min(chunk, rows - start)
        q = torch.randn(n, 1, d_k, generator=gen)  # (n, 1, d_k)
        k = torch.randn(n, keys, d_k, generator=gen)  # (n, keys, d_k)
        out.append((q.double() * k.double()).sum(-1))  # (n, keys)
    return torch.cat(out)


def softmax_summary(scores: Tensor) -> tuple[float, float, float]:
    """``(mean max weight, mean entropy, mean Jacobian norm)`` of ``softmax(scores)`` over the last dim."""
    p = torch.softmax(scores.double(), dim=-1)
    return float(max_weight(p).mean()), float(entropy(p).mean()), float(softmax_jacobian_norm(p).mean())


def synthetic_scores(dims=DIMS, rows: int = 2048, keys: int = 16, seed: int = 0) -> SyntheticResult:
    """Measure variance and softmax saturation at every ``d_k`` in ``dims`` (see the module docstring).

    Args:
        dims: head dimensions to measure (at least two, all >= 1).
        rows: queries per ``d_k``.
        keys: keys per query (the softmax runs over them).
        seed: makes the draw reproducible.
    """
    dims = tuple(int(d) for d in dims)
    if len(dims) < 2:
        raise ValueError(f"need at least two d_k values to fit a slope, got {dims}")
    out = []
    for d in dims:
        raw = sample_scores(d, rows, keys, seed)  # (rows, keys)
        scaled = raw / math.sqrt(d)
        mu, hu, ju = softmax_summary(raw)
        ms, hs, js = softmax_summary(scaled)
        out.append(SyntheticRow(d, float(raw.var()), float(scaled.var()), mu, ms, hu, hs, ju, js))
    slope, intercept = loglog_slope(dims, [r.var_raw for r in out])
    return SyntheticResult(tuple(out), slope, intercept, rows, keys, seed)
