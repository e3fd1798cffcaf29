"""The measurements behind ``qkv claims``, on plain tensors (no model, no I/O).

Every function works on the last dimension (a row of scores or weights over the keys) and keeps the
leading dimensions, so the same code measures synthetic rows and a model's ``(N, H, L, L)`` weights.

Shape legend: ``...`` any leading dims, ``Lk`` keys per row, ``P`` token pairs.

Example:
    >>> import torch
    >>> p = torch.tensor([[0.5, 0.5], [1.0, 0.0]], dtype=torch.float64)
    >>> softmax_jacobian_norm(p).tolist()      # ||diag(p) - p p^T||_F: a one-hot row has no gradient
    [0.5, 0.0]
    >>> [round(x, 4) for x in entropy(p).tolist()]
    [0.6931, 0.0]
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from ..lens.stats import rankdata

__all__ = [
    "softmax_jacobian",
    "softmax_jacobian_norm",
    "entropy",
    "max_weight",
    "top_mass",
    "loglog_slope",
    "cosine_matrix",
    "pearson",
    "spearman",
    "rankdata",
]


def softmax_jacobian(p: Tensor) -> Tensor:
    """The Jacobian of softmax at weights ``p``: ``d softmax(s)_i / d s_j = diag(p) - p p^T``.

    Args:
        p: ``(..., Lk)`` softmax weights (rows sum to 1).

    Returns:
        ``(..., Lk, Lk)``.
    """
    return torch.diag_embed(p) - p.unsqueeze(-1) * p.unsqueeze(-2)


def softmax_jacobian_norm(p: Tensor) -> Tensor:
    """Frobenius norm of :func:`softmax_jacobian` per row, without building the matrix.

    ``||diag(p) - p p^T||_F^2 = sum_i p_i^2 (1 - p_i)^2 + sum_{i != j} p_i^2 p_j^2``. In float64, with the
    heaviest weight ``p_a`` handled apart (``1 - p_a`` taken as the sum of the other weights) so that nearly
    one-hot rows -- the saturated softmax this measures -- do not cancel to 0. Gives 0 for a one-hot row
    (no gradient passes) and ``sqrt(1/n - 1/n^2)`` for a uniform row over ``n`` keys.

    Args:
        p: ``(..., Lk)`` softmax weights (rows sum to 1).

    Returns:
        ``(...)`` float64.
    """
    p = p.double()
    a = p.argmax(-1, keepdim=True)
    is_a = torch.zeros_like(p, dtype=torch.bool).scatter_(-1, a, True)
    rest = p.masked_fill(is_a, 0.0)  # every weight but the heaviest
    pa = p.gather(-1, a).squeeze(-1)
    one_minus = torch.where(is_a, rest.sum(-1, keepdim=True), 1.0 - p)  # 1 - p_i, exact for the heaviest
    t2, t4 = (rest**2).sum(-1), (rest**4).sum(-1)
    off = 2.0 * pa * pa * t2 + (t2 * t2 - t4).clamp_min(0.0)  # sum_{i != j} p_i^2 p_j^2
    return ((p * one_minus) ** 2).sum(-1).add(off).sqrt()


def entropy(p: Tensor) -> Tensor:
    """Shannon entropy ``-sum_i p_i log p_i`` in nats per row (``0 log 0 = 0``); ``(..., Lk) -> (...)``."""
    p = p.double()
    return 0.0 - torch.special.xlogy(p, p).sum(-1)  # 0.0 - x: no "-0.0" for one-hot rows


def max_weight(p: Tensor) -> Tensor:
    """The largest weight of each row; ``(..., Lk) -> (...)``."""
    return p.amax(-1)


def top_mass(p: Tensor, k: int) -> Tensor:
    """The mass the ``k`` heaviest keys of each row take (all of it when ``Lk <= k``); ``(..., Lk) -> (...)``."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return p.topk(min(k, p.shape[-1]), dim=-1).values.sum(-1)


def loglog_slope(x, y) -> tuple[float, float]:
    """Least-squares fit of ``log y = slope * log x + intercept``.

    Args:
        x, y: positive numbers of equal length (at least 2).

    Returns:
        ``(slope, intercept)``; ``y = c * x^a`` gives ``(a, log c)`` exactly.

    Example:
        >>> [round(v, 6) for v in loglog_slope([1, 2, 4, 8], [3, 6, 12, 24])]
        [1.0, 1.098612]
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or len(x) < 2:
        raise ValueError(f"x and y must be 1-D of equal length >= 2, got shapes {x.shape} and {y.shape}")
    if (x <= 0).any() or (y <= 0).any():
        raise ValueError("a log-log fit needs positive x and y")
    lx, ly = np.log(x), np.log(y)
    slope, intercept = np.polyfit(lx, ly, 1)
    return float(slope), float(intercept)


def cosine_matrix(x: Tensor) -> Tensor:
    """Cosine similarity of every pair of rows: ``(..., L, D) -> (..., L, L)`` (float64)."""
    x = torch.nn.functional.normalize(x.double(), dim=-1)
    return x @ x.transpose(-2, -1)


def pearson(x, y) -> float:
    """Pearson correlation of two equal-length 1-D samples (``nan`` when one is constant).

    Example:
        >>> round(pearson([1, 2, 3, 4], [2, 4, 6, 8.5]), 4), pearson([1, 2, 3], [3, 2, 1])
        (0.9984, -1.0)
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or len(x) < 2:
        raise ValueError(f"x and y must be 1-D of equal length >= 2, got shapes {x.shape} and {y.shape}")
    dx, dy = x - x.mean(), y - y.mean()
    den = math.sqrt(float((dx * dx).sum()) * float((dy * dy).sum()))
    return float((dx * dy).sum()) / den if den > 0 else float("nan")


def spearman(x, y) -> float:
    """Spearman rank correlation: :func:`pearson` of :func:`rankdata` (ties averaged).

    Example:
        >>> spearman([1, 2, 3, 4], [1, 4, 9, 16]), spearman([1, 2, 3], [1, 1, 0])
        (1.0, -0.8660254037844387)
    """
    return pearson(rankdata(x), rankdata(y))
