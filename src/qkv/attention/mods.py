"""Score modifications applied to the *scaled* scores before masking and softmax.

A score mod is any callable ``fn(score, b, h, q_idx, kv_idx) -> score`` (FlexAttention's
``score_mod``): ``score`` is a float tensor, the indices are broadcastable int64 tensors, and the
result must broadcast to ``score``'s shape. The built-ins are :class:`ScoreMod` objects that also
know the problem's lengths (ALiBi needs the causal alignment):

* :func:`alibi` (with :func:`alibi_slopes` for the standard slopes of ``n`` heads),
* :func:`softcap` (Gemma 2 / Grok: ``cap * tanh(score / cap)``),
* :func:`bias` (an additive tensor broadcastable to ``(B, H, Lq, Lk)``; differentiable),
* :func:`compose` (apply several in order).

Example:
    >>> import torch
    >>> from qkv import mods
    >>> s = torch.zeros(1, 2, 1, 3)
    >>> b, h, q, kv = (torch.arange(n).view(*(1,) * i, n, *(1,) * (3 - i)) for i, n in enumerate((1, 2, 1, 3)))
    >>> mods.alibi(mods.alibi_slopes(2)).apply(s, b, h, q, kv, 1, 3)[0, :, 0].tolist()
    [[-0.125, -0.0625, 0.0], [-0.0078125, -0.00390625, 0.0]]
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor

from .mask_base import as_4d, check_broadcast, gather_4d

__all__ = ["ScoreMod", "alibi", "alibi_slopes", "softcap", "bias", "compose", "apply", "offset", "as_mod"]

ScoreFn = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor], Tensor]


class ScoreMod:
    """A score mod that may depend on the problem's lengths ``lq``/``lk``.

    Calling it as ``mod(score, b, h, q_idx, kv_idx)`` assumes ``lq == lk`` is unknown and uses
    :meth:`apply` with lengths inferred from the indices' extents.
    """

    def apply(self, score: Tensor, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor, lq: int, lk: int) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement apply()")

    def __call__(self, score, b, h, q_idx, kv_idx):
        lq = int(q_idx.max()) + 1 if q_idx.numel() else 0
        lk = int(kv_idx.max()) + 1 if kv_idx.numel() else 0
        return self.apply(score, b, h, q_idx, kv_idx, lq, lk)


def apply(mod, score: Tensor, b, h, q_idx, kv_idx, lq: int, lk: int) -> Tensor:
    """Apply ``mod`` (a :class:`ScoreMod` or a plain callable) to ``score``."""
    if mod is None:
        return score
    if isinstance(mod, ScoreMod):
        out = mod.apply(score, b, h, q_idx, kv_idx, lq, lk)
    else:
        out = mod(score, b, h, q_idx, kv_idx)
    if not isinstance(out, Tensor):
        raise ValueError(f"score_mod must return a tensor, got {type(out).__name__}")
    if out.shape != score.shape:
        out = out.expand(score.shape) if torch.broadcast_shapes(out.shape, score.shape) == score.shape else out
        if out.shape != score.shape:
            raise ValueError(f"score_mod returned shape {tuple(out.shape)} but scores have {tuple(score.shape)}; "
                             "return a tensor broadcastable to the score block")
    return out


def alibi_slopes(num_heads: int) -> Tensor:
    """The standard ALiBi slopes (Press et al. 2022): ``2^(-8 i / n)`` for ``i = 1..n``, with the
    interleaving rule for a head count that is not a power of two (as in BLOOM / MPT)."""
    if not isinstance(num_heads, int) or num_heads <= 0:
        raise ValueError(f"alibi_slopes: num_heads must be a positive int, got {num_heads!r}")

    def pow2(n):
        start = 2 ** (-8 / n)
        return [start ** (i + 1) for i in range(n)]

    m = 2 ** math.floor(math.log2(num_heads))
    slopes = pow2(m)
    if m < num_heads:
        slopes += pow2(2 * m)[0::2][: num_heads - m]
    return torch.tensor(slopes, dtype=torch.float32)


class _Alibi(ScoreMod):
    def __init__(self, slopes, align: str):
        t = torch.as_tensor(slopes, dtype=torch.float32)
        if t.dim() != 1:
            raise ValueError(f"alibi: slopes must be a 1-D tensor with one slope per head, got shape {tuple(t.shape)}; "
                             "use qkv.mods.alibi_slopes(num_heads)")
        if align not in ("bottom_right", "top_left"):
            raise ValueError(f"alibi: align must be 'bottom_right' or 'top_left', got {align!r}")
        self.slopes, self.align = t, align
        self.num_heads = t.shape[0]

    def apply(self, score, b, h, q_idx, kv_idx, lq, lk):
        off = lk - lq if self.align == "bottom_right" else 0
        if h.numel() and int(h.max()) >= self.num_heads:
            raise ValueError(f"alibi has {self.num_heads} slopes but attention has more heads "
                             f"(head index {int(h.max())}); give one slope per query head")
        slope = self.slopes.to(device=score.device, dtype=score.dtype)[h]
        dist = (q_idx + off - kv_idx).abs().to(score.dtype)
        return score - slope * dist


def alibi(slopes, align: str = "bottom_right") -> ScoreMod:
    """ALiBi: ``score - slope[h] * |i + off - j|`` (``off`` as in :func:`qkv.masks.causal`).

    On the causal part this is the usual ``-slope * (i - j)``; combine with ``masks.causal()``
    for decoder models. It equals ``bias(tensor)`` with the explicit distance tensor.
    """
    return _Alibi(slopes, align)


class _Softcap(ScoreMod):
    def __init__(self, cap: float):
        if not (isinstance(cap, (int, float)) and math.isfinite(cap) and cap > 0):
            raise ValueError(f"softcap: cap must be a positive finite number, got {cap!r} (Gemma 2 uses 50.0)")
        self.cap = float(cap)

    def apply(self, score, b, h, q_idx, kv_idx, lq, lk):
        return self.cap * torch.tanh(score / self.cap)


def softcap(cap: float) -> ScoreMod:
    """Soft-capping: ``cap * tanh(score / cap)`` keeps every score inside ``(-cap, cap)``."""
    return _Softcap(cap)


class _Bias(ScoreMod):
    def __init__(self, tensor: Tensor):
        if not isinstance(tensor, Tensor) or not tensor.dtype.is_floating_point:
            raise ValueError(f"bias: expected a float tensor broadcastable to (B, H, Lq, Lk), got "
                             f"{tensor.dtype if isinstance(tensor, Tensor) else type(tensor).__name__}; "
                             "for a boolean mask use mask=... instead")
        self.tensor = as_4d(tensor, "bias")

    def check(self, B: int, H: int, lq: int, lk: int) -> None:
        check_broadcast(self.tensor, (B, H, lq, lk), "bias")

    def apply(self, score, b, h, q_idx, kv_idx, lq, lk):
        return score + gather_4d(self.tensor, b, h, q_idx, kv_idx).to(score.dtype)


def bias(tensor: Tensor) -> ScoreMod:
    """Add a float tensor broadcastable to ``(B, H, Lq, Lk)`` to the scaled scores (T5/relative
    position biases, additive masks). Gradients flow into ``tensor``."""
    return _Bias(tensor)


class _Compose(ScoreMod):
    def __init__(self, mods: Sequence):
        for m in mods:
            if not callable(m) and not isinstance(m, ScoreMod):
                raise ValueError(f"compose: every mod must be callable, got {type(m).__name__}")
        self.mods = list(mods)

    def apply(self, score, b, h, q_idx, kv_idx, lq, lk):
        for m in self.mods:
            score = apply(m, score, b, h, q_idx, kv_idx, lq, lk)
        return score


def compose(*mods) -> ScoreMod:
    """Apply ``mods`` left to right: ``compose(alibi(s), softcap(30))``."""
    return _Compose(mods)


class _Offset(ScoreMod):
    def __init__(self, mod, q_offset: int, kv_offset: int, lq_total: int, lk_total: int):
        self.mod, self.q_offset, self.kv_offset = mod, q_offset, kv_offset
        self.lq_total, self.lk_total = lq_total, lk_total

    def apply(self, score, b, h, q_idx, kv_idx, lq, lk):
        return apply(self.mod, score, b, h, q_idx + self.q_offset, kv_idx + self.kv_offset,
                     self.lq_total, self.lk_total)


def offset(mod, q_offset: int, kv_offset: int, lq_total: int, lk_total: int):
    """The mod of a sub-block of a global ``lq_total x lk_total`` problem (see ``masks.offset``)."""
    return None if mod is None else _Offset(mod, q_offset, kv_offset, lq_total, lk_total)


def as_mod(mod):
    """Accept ``None``, a callable, a :class:`ScoreMod`, or a list/tuple of them (composed)."""
    if mod is None or isinstance(mod, ScoreMod):
        return mod
    if isinstance(mod, (list, tuple)):
        return compose(*mod)
    if callable(mod):
        return mod
    raise ValueError(f"score_mod must be a callable fn(score, b, h, q_idx, kv_idx) -> score, a qkv.mods "
                     f"ScoreMod, or a list of them; got {type(mod).__name__}")
