"""The log-sum-exp rule, written once: NaN-safe for empty rows, one dtype rule.

Every implementation, :func:`qkv.merge` and ring attention use these two functions, so an empty row
(nothing attended) gives ``lse = -inf`` and weights 0 -- never NaN -- in one way everywhere, and a row with a
NaN or ``+inf`` entry gives NaN (never a finite or ``-inf`` lse that would hide it in a merge).

Example:
    >>> import torch
    >>> x = torch.tensor([[0.0, 0.0], [float("-inf"), float("-inf")]])
    >>> p, total, lse = stable_exp(x)
    >>> (p / total).tolist(), lse.tolist()
    ([[0.5, 0.5], [0.0, 0.0]], [0.6931471824645996, -inf])
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["lse_dtype", "stable_exp"]


def lse_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of a log-sum-exp for inputs of ``dtype``: float64 for float64, float32 otherwise."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def stable_exp(x: Tensor, dim: int = -1, inplace: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """``(p, total, lse)``: ``p = exp(x - shift)``, its sum ``total`` (dim kept) and the log-sum-exp.

    The shift is the max along ``dim`` (0 for rows that are all ``-inf``; no gradient), so ``p / total`` is
    the softmax and ``lse = shift + log(total)`` (``dim`` removed). A row with every entry ``-inf`` gets
    ``p = 0``, ``total = 1`` (safe to divide by) and ``lse = -inf`` -- never NaN; a row holding NaN or
    ``+inf`` gets NaN in ``p / total`` and ``lse`` (IEEE: ``inf - inf``). ``inplace`` reuses ``x`` for ``p``
    (only for a tensor the caller owns and does not differentiate).
    """
    m = x.amax(dim=dim, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m)).detach()  # empty rows: shift by 0
    p = x.sub_(m).exp_() if inplace else torch.exp(x - m)
    s = p.sum(dim=dim, keepdim=True)  # in [1, n] for rows of finite/-inf entries; inf or NaN with +inf or NaN
    empty = s == 0
    total = torch.where(empty, torch.ones_like(s), s)
    lse = torch.where(torch.isfinite(total), m + torch.log(total), float("nan"))
    lse = torch.where(empty, float("-inf"), lse)
    return p, total, lse.squeeze(dim)
