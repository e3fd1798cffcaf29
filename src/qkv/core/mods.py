"""Score modifications applied to the *scaled* scores before masking and softmax.

A score mod is any callable ``fn(score, b, h, q_idx, kv_idx) -> score`` (FlexAttention's
``score_mod``): ``score`` is a float tensor, the indices are broadcastable int64 tensors, and the
result must broadcast to ``score``'s shape and be floating point. Every mod is held as a :class:`ScoreMod`
(plain callables are wrapped), which also knows the problem's lengths (ALiBi needs the causal alignment) and
describes itself to the engines -- ``additive`` (adds a bias that does not depend on the score),
``shift_invariant`` (depends on ``kv - q`` and the head only), ``children`` (of a composition),
``tensors()`` (what it holds) and ``fingerprint()``. The built-ins:

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
from .walk import fingerprint_of, leaves

__all__ = [
    "ScoreMod",
    "alibi",
    "alibi_slopes",
    "softcap",
    "bias",
    "compose",
    "apply",
    "offset",
    "as_mod",
    "additive",
    "shift_invariant",
]

ScoreFn = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor], Tensor]


class ScoreMod:
    """A score mod that may depend on the problem's lengths ``lq``/``lk``, with its public description.

    Calling it as ``mod(score, b, h, q_idx, kv_idx)`` infers the lengths from the indices' extents and
    uses :meth:`apply`.
    """

    #: the mods this one is composed of (empty for a leaf)
    children: tuple["ScoreMod", ...] = ()
    #: adds a bias that does not depend on the score (ALiBi, bias tensors)
    additive_leaf: bool = False
    #: depends on ``kv - q`` and the head only (ALiBi)
    shift_invariant_leaf: bool = False
    #: per-head parameters (checked against the query heads), or None
    num_heads: int | None = None

    def apply(self, score: Tensor, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor, lq: int, lk: int) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement apply()")

    def __call__(self, score, b, h, q_idx, kv_idx):
        lq = int(q_idx.max()) + 1 if q_idx.numel() else 0
        lk = int(kv_idx.max()) + 1 if kv_idx.numel() else 0
        return self.apply(score, b, h, q_idx, kv_idx, lq, lk)

    def check(self, B: int, H: int, lq: int, lk: int) -> None:
        """Raise ``ValueError`` unless the mod fits a ``(B, H, lq, lk)`` problem."""
        if self.num_heads is not None and self.num_heads != H:
            raise ValueError(
                f"score_mod {self!r} has {self.num_heads} per-head parameters but the attention has "
                f"{H} query heads; give one per query head"
            )
        for child in self.children:
            child.check(B, H, lq, lk)

    def tensors(self) -> list[Tensor]:
        """The tensors this mod holds directly (a bias tensor); callables' captures are found by probing."""
        return [t for t in vars(self).values() if isinstance(t, Tensor)]

    def fingerprint(self):
        """Hashable key of identity and tensor versions, or None (see :func:`qkv.core.walk.fingerprint_of`)."""
        return fingerprint_of(self)


def additive(mod: ScoreMod | None) -> bool:
    """True when ``mod`` only adds a score-independent bias (ALiBi, bias, compositions/offsets of them)."""
    return mod is None or all(m.additive_leaf for m in leaves(mod))


def shift_invariant(mod: ScoreMod | None) -> bool:
    """True when ``mod`` depends on ``kv - q`` and the head only (ALiBi and compositions of it)."""
    return mod is None or all(m.shift_invariant_leaf for m in leaves(mod))


class _Function(ScoreMod):
    """A plain callable ``fn(score, b, h, q_idx, kv_idx) -> score`` (FlexAttention's ``score_mod``)."""

    def __init__(self, fn: ScoreFn):
        self.fn = fn

    def apply(self, score, b, h, q_idx, kv_idx, lq, lk):
        return self.fn(score, b, h, q_idx, kv_idx)

    def fingerprint(self):
        return None  # a function's behaviour cannot be fingerprinted

    def __repr__(self):
        return f"score_mod({getattr(self.fn, '__qualname__', type(self.fn).__name__)})"


def apply(mod: ScoreMod | None, score: Tensor, b, h, q_idx, kv_idx, lq: int, lk: int) -> Tensor:
    """Apply ``mod`` to ``score`` and check what it returns (a float tensor broadcastable to ``score``)."""
    if mod is None:
        return score
    try:
        out = mod.apply(score, b, h, q_idx, kv_idx, lq, lk)
    except (ValueError, TypeError) as e:
        if isinstance(e, ValueError) and "score_mod" in str(e):
            raise
        raise ValueError(
            f"score_mod {mod!r} failed on a {tuple(score.shape)} score block: {type(e).__name__}: {e}; "
            "a score mod gets (score, b, h, q_idx, kv_idx) broadcastable tensors"
        ) from e
    except (IndexError, RuntimeError) as e:
        raise ValueError(
            f"score_mod {mod!r} failed on a {tuple(score.shape)} score block: {type(e).__name__}: {e}; "
            "a score mod must work on any block of the score matrix (use the index tensors, not "
            "fixed shapes)"
        ) from e
    if not isinstance(out, Tensor):
        raise ValueError(
            f"score_mod {mod!r} must return a tensor, got {type(out).__name__}; return e.g. `score + bias[h]`"
        )
    if not out.dtype.is_floating_point:
        raise ValueError(
            f"score_mod {mod!r} returned dtype {out.dtype}, expected a floating-point tensor "
            f"({score.dtype}); return a float score, e.g. `score + bias`, not a comparison"
        )
    if out.shape != score.shape:
        try:
            ok = torch.broadcast_shapes(out.shape, score.shape) == score.shape
        except RuntimeError:
            ok = False
        if not ok:
            raise ValueError(
                f"score_mod {mod!r} returned shape {tuple(out.shape)} but the score block has "
                f"{tuple(score.shape)}; compute it from the index tensors (b, h, q_idx, kv_idx) so it "
                "broadcasts to the block -- a fixed (Lq, Lk) tensor belongs in qkv.mods.bias(tensor)"
            )
        out = out.expand(score.shape)
    return out if out.dtype == score.dtype else out.to(score.dtype)


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
    additive_leaf = True
    shift_invariant_leaf = True

    def __init__(self, slopes, align: str):
        t = torch.as_tensor(slopes, dtype=torch.float32)
        if t.dim() != 1:
            raise ValueError(
                f"alibi: slopes must be a 1-D tensor with one slope per head, got shape {tuple(t.shape)}; "
                "use qkv.mods.alibi_slopes(num_heads)"
            )
        if align not in ("bottom_right", "top_left"):
            raise ValueError(f"alibi: align must be 'bottom_right' or 'top_left', got {align!r}")
        self.slopes, self.align = t, align
        self.num_heads = t.shape[0]

    def apply(self, score, b, h, q_idx, kv_idx, lq, lk):
        off = lk - lq if self.align == "bottom_right" else 0
        # (skipped while torch.compile traces it, e.g. inside FlexAttention: check() has verified the head count)
        if h.numel() and not torch.compiler.is_compiling() and int(h.max()) >= self.num_heads:
            raise ValueError(
                f"alibi has {self.num_heads} slopes but attention has more heads "
                f"(head index {int(h.max())}); give one slope per query head"
            )
        slope = self.slopes.to(device=score.device, dtype=score.dtype)[h]
        dist = (q_idx + off - kv_idx).abs().to(score.dtype)
        return score - slope * dist

    def __repr__(self):
        return f"alibi({self.num_heads} slopes, align={self.align!r})"


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

    def __repr__(self):
        return f"softcap({self.cap})"


def softcap(cap: float) -> ScoreMod:
    """Soft-capping: ``cap * tanh(score / cap)`` keeps every score inside ``(-cap, cap)``."""
    return _Softcap(cap)


class _Bias(ScoreMod):
    additive_leaf = True

    def __init__(self, tensor: Tensor):
        if not isinstance(tensor, Tensor) or not tensor.dtype.is_floating_point:
            raise ValueError(
                f"bias: expected a float tensor broadcastable to (B, H, Lq, Lk), got "
                f"{tensor.dtype if isinstance(tensor, Tensor) else type(tensor).__name__}; "
                "for a boolean mask use mask=... instead"
            )
        self.tensor = as_4d(tensor, "bias")

    def check(self, B: int, H: int, lq: int, lk: int) -> None:
        check_broadcast(self.tensor, (B, H, lq, lk), "bias")

    def __repr__(self):
        return f"bias(shape={tuple(self.tensor.shape)})"

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
        self.children = tuple(as_mod(m) for m in mods)

    def apply(self, score, b, h, q_idx, kv_idx, lq, lk):
        for m in self.children:
            score = apply(m, score, b, h, q_idx, kv_idx, lq, lk)
        return score

    def __repr__(self):
        return f"compose({', '.join(map(repr, self.children))})"


def compose(*mods) -> ScoreMod:
    """Apply ``mods`` left to right: ``compose(alibi(s), softcap(30))``."""
    return _Compose(mods)


class _OffsetMod(ScoreMod):
    def __init__(self, mod, q_offset: int, kv_offset: int, lq_total: int, lk_total: int):
        self.mod, self.q_offset, self.kv_offset = as_mod(mod), q_offset, kv_offset
        self.lq_total, self.lk_total = lq_total, lk_total
        self.children = (self.mod,)

    def check(self, B, H, lq, lk):
        self.mod.check(B, H, self.lq_total, self.lk_total)

    def __repr__(self):
        return f"offset({self.mod!r}, q+{self.q_offset}, kv+{self.kv_offset})"

    def apply(self, score, b, h, q_idx, kv_idx, lq, lk):
        return apply(
            self.mod, score, b, h, q_idx + self.q_offset, kv_idx + self.kv_offset, self.lq_total, self.lk_total
        )


def offset(mod, q_offset: int, kv_offset: int, lq_total: int, lk_total: int):
    """The mod of a sub-block of a global ``lq_total x lk_total`` problem (see ``masks.offset``)."""
    return None if mod is None else _OffsetMod(mod, q_offset, kv_offset, lq_total, lk_total)


def as_mod(mod) -> ScoreMod | None:
    """Accept ``None``, a callable, a :class:`ScoreMod`, or a list/tuple of them (composed); callables are
    wrapped so that engines only ever see :class:`ScoreMod` objects."""
    if mod is None or isinstance(mod, ScoreMod):
        return mod
    if isinstance(mod, (list, tuple)):
        return compose(*mod)
    if callable(mod):
        return _Function(mod)
    raise ValueError(
        f"score_mod must be a callable fn(score, b, h, q_idx, kv_idx) -> score, a qkv.mods "
        f"ScoreMod, or a list of them; got {type(mod).__name__}"
    )
