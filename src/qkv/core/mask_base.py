"""The :class:`Mask` base class with its public description, composition (``&``, ``|``, ``~``), tensor
masks, offsets and the block kinds EMPTY / PARTIAL / FULL. The constructors users call live in
:mod:`qkv.masks`.

Engines read a mask only through its public description -- never through its class:

* :meth:`Mask.band` -- ``Band(lo, hi)`` when the mask is exactly ``lo <= kv - q <= hi`` (causal, windows,
  full, and their intersections and offsets), else None;
* :attr:`Mask.translation_invariant` -- the mask at ``(q, kv)`` depends on ``kv - q`` only;
* :attr:`Mask.children` -- the masks a composition is made of (walk them with :func:`qkv.core.walk.walk`);
* :meth:`Mask.key_lengths` -- ``(B,)`` lengths when the mask is exactly key padding;
* :meth:`Mask.block_map` and :attr:`Mask.closed_form` -- per-block EMPTY/PARTIAL/FULL, and whether that is cheap;
* :meth:`Mask.fingerprint` -- a hashable identity+version key (None: cannot be cached).

Shape legend: ``B`` batch, ``H`` heads, ``Lq`` query length, ``Lk`` key length.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import torch
from torch import Tensor
from torch.types import Device

from .walk import fingerprint_of

__all__ = [
    "EMPTY",
    "PARTIAL",
    "FULL",
    "Band",
    "Mask",
    "MaskLike",
    "as_mask",
    "offset",
    "check_broadcast",
    "as_4d",
    "index_grid",
    "gather_4d",
]

EMPTY, PARTIAL, FULL = 0, 1, 2
_ALIGNS = ("bottom_right", "top_left")


@dataclass(frozen=True)
class Band:
    """The mask "query ``q`` may attend key ``kv`` iff ``lo <= kv - q <= hi``" (None = unbounded).

    ``Band(None, None)`` is the full mask; ``Band(None, c)`` is causal with the diagonal shifted by ``c``
    (query ``i`` sees keys ``j <= i + c``).

    Example:
        >>> Band(None, 0).intersect(Band(-3, None))
        Band(lo=-3, hi=0)
    """

    lo: int | None
    hi: int | None

    @property
    def full(self) -> bool:
        return self.lo is None and self.hi is None

    def intersect(self, other: "Band") -> "Band":
        lo = [x for x in (self.lo, other.lo) if x is not None]
        hi = [x for x in (self.hi, other.hi) if x is not None]
        return Band(max(lo) if lo else None, min(hi) if hi else None)

    def shift(self, by: int) -> "Band":
        return Band(None if self.lo is None else self.lo + by, None if self.hi is None else self.hi + by)


def _check_align(align: str) -> str:
    if align not in _ALIGNS:
        raise ValueError(
            f"align must be one of {_ALIGNS}, got {align!r}; "
            "use 'bottom_right' for KV-cache decoding, 'top_left' to match SDPA's is_causal"
        )
    return align


def _diag_offset(align: str, lq: int, lk: int) -> int:
    """Key index aligned with query 0: ``Lk - Lq`` for bottom_right, 0 for top_left."""
    return lk - lq if align == "bottom_right" else 0


def index_grid(B: int, H: int, lq: int, lk: int, device: Device = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Broadcastable index tensors b (B,1,1,1), h (1,H,1,1), q (1,1,Lq,1), kv (1,1,1,Lk)."""
    b = torch.arange(B, device=device).view(B, 1, 1, 1)
    h = torch.arange(H, device=device).view(1, H, 1, 1)
    q = torch.arange(lq, device=device).view(1, 1, lq, 1)
    kv = torch.arange(lk, device=device).view(1, 1, 1, lk)
    return b, h, q, kv


def _block_bounds(length: int, block: int, device: Device = None) -> tuple[Tensor, Tensor]:
    """First and last (inclusive) index of each block: two (n,) int64 tensors."""
    starts = torch.arange(0, max(length, 0), block, device=device)
    ends = torch.clamp(starts + block, max=length) - 1
    return starts, ends


def as_4d(t: Tensor, what: str) -> Tensor:
    """View a tensor of at most 4 dims as ``(B|1, H|1, Lq|1, Lk|1)`` (leading dims of size 1 added)."""
    if t.dim() > 4:
        raise ValueError(f"{what} must have at most 4 dims broadcastable to (B, H, Lq, Lk), got shape {tuple(t.shape)}")
    return t.reshape((1,) * (4 - t.dim()) + tuple(t.shape))


def check_broadcast(t: Tensor, target: tuple[int, int, int, int], what: str) -> None:
    """Raise unless the 4-d ``t`` broadcasts to ``target = (B, H, Lq, Lk)``; names both shapes."""
    for have, want, nm in zip(t.shape, target, "B H Lq Lk".split()):
        if have not in (1, want):
            raise ValueError(
                f"{what} of shape {tuple(t.shape)} is not broadcastable to (B, H, Lq, Lk) = "
                f"{tuple(target)} ({nm}: {have} vs {want}); give each dim either its full size or 1"
            )


def gather_4d(t: Tensor, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
    """``t[b, h, q_idx, kv_idx]`` for broadcastable index tensors; size-1 dims of ``t`` broadcast."""
    idx = [i if t.shape[d] > 1 else torch.zeros_like(i) for d, i in enumerate((b, h, q_idx, kv_idx))]
    return t[idx[0], idx[1], idx[2], idx[3]]


class Mask:
    """A boolean attention mask (``True`` = may attend). Subclasses implement :meth:`evaluate`.

    ``batch_size`` / ``num_heads`` are the sizes a mask depends on (``None`` = broadcast).
    """

    batch_size: int | None = None
    num_heads: int | None = None
    #: the masks this one is composed of (empty for a leaf)
    children: tuple["Mask", ...] = ()

    # -- what subclasses provide -------------------------------------------------------------
    def evaluate(self, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor, lq: int, lk: int) -> Tensor:
        """The mask at broadcastable index tensors of an ``lq x lk`` problem (bool tensor)."""
        raise NotImplementedError(f"{type(self).__name__} must implement evaluate()")

    # -- the public description engines read ---------------------------------------------------
    def band(self, lq: int, lk: int) -> Band | None:
        """``Band(lo, hi)`` when this mask of an ``lq x lk`` problem is exactly ``lo <= kv - q <= hi``."""
        return None

    @property
    def translation_invariant(self) -> bool:
        """True when the mask at ``(q, kv)`` depends on ``kv - q`` only (for given lengths)."""
        return False

    @property
    def closed_form(self) -> bool:
        """True when :meth:`block_map` is computed in closed form (cheap at any block size)."""
        return False

    def key_lengths(self) -> Tensor | None:
        """``(B,)`` int64 lengths when the mask is exactly "key ``kv`` may be attended iff ``kv < len[b]``"."""
        return None

    def check(self, B: int, H: int, lq: int, lk: int) -> None:
        """Raise ``ValueError`` unless the mask fits a ``(B, H, lq, lk)`` problem."""
        for have, want, nm in ((self.batch_size, B, "batch"), (self.num_heads, H, "heads")):
            if have is not None and have != want:
                raise ValueError(
                    f"mask {self!r} is for {nm} {have} but the attention has {nm} {want}; "
                    f"build it with one entry per {nm} element ({want}), e.g. lengths of shape ({want},)"
                )
        for child in self.children:
            child.check(B, H, lq, lk)

    def fingerprint(self) -> object:
        """Hashable key of this mask's identity and the versions of its tensors (an in-place change
        gives a new key), or None when it cannot be fingerprinted (functions, inference tensors)."""
        return fingerprint_of(self)

    def _block_map(self, lq: int, lk: int, block_q: int, block_k: int, device: Device = None) -> Tensor | None:
        """Closed-form block map, or None to evaluate the mask block-row by block-row."""
        return None

    # -- derived -----------------------------------------------------------------------------
    def dense(self, B: int = 1, H: int = 1, lq: int = 1, lk: int = 1, device: Device = None) -> Tensor:
        """Materialise as a bool tensor of shape ``(B|1, H|1, lq, lk)``."""
        Bm = B if self.batch_size is not None else 1
        Hm = H if self.num_heads is not None else 1
        b, h, q, kv = index_grid(Bm, Hm, lq, lk, device)
        out = self.evaluate(b, h, q, kv, lq, lk)
        return out.expand(Bm, Hm, lq, lk)

    def block_map(self, lq: int, lk: int, block_q: int, block_k: int, device: Device = None) -> Tensor:
        """Per-block kind: int8 ``(B|1, H|1, ceil(lq/block_q), ceil(lk/block_k))`` of EMPTY/PARTIAL/FULL.

        A block is EMPTY when no (q, k) pair in it may attend, FULL when all may, else PARTIAL.
        """
        fast = self._block_map(lq, lk, block_q, block_k, device)
        if fast is not None:
            return fast.to(torch.int8)
        Bm = self.batch_size or 1
        Hm = self.num_heads or 1
        nq, nk = -(-lq // block_q), -(-lk // block_k)
        out = torch.empty(Bm, Hm, nq, nk, dtype=torch.int8, device=device)
        b, h, _, kv = index_grid(Bm, Hm, 0, lk, device)
        pad = nk * block_k - lk
        for i in range(nq):
            q0, q1 = i * block_q, min((i + 1) * block_q, lq)
            q = torch.arange(q0, q1, device=device).view(1, 1, -1, 1)
            m = self.evaluate(b, h, q, kv, lq, lk).expand(Bm, Hm, q1 - q0, lk)
            anyv = m.any(dim=2)  # (Bm, Hm, lk)
            allv = m.all(dim=2)
            if pad:
                anyv = torch.nn.functional.pad(anyv, (0, pad), value=False)
                allv = torch.nn.functional.pad(allv, (0, pad), value=True)
            anyb = anyv.view(Bm, Hm, nk, block_k).any(-1)
            allb = allv.view(Bm, Hm, nk, block_k).all(-1)
            out[:, :, i] = torch.where(allb, FULL, torch.where(anyb, PARTIAL, EMPTY)).to(torch.int8)
        return out

    def draw(self, lq: int, lk: int, b: int = 0, h: int = 0) -> str:
        """ASCII picture of the mask for batch ``b``, head ``h`` (■ attend, · masked)."""
        m = self.dense(max(b + 1, self.batch_size or 1), max(h + 1, self.num_heads or 1), lq, lk)
        m = m[min(b, m.shape[0] - 1), min(h, m.shape[1] - 1)]
        w = max(len(str(lk - 1)), 1)
        wq = len(str(max(lq - 1, 0)))
        head = " " * (wq + 2) + "k " + " ".join(str(j).rjust(w) for j in range(lk))
        rows = [head]
        for i in range(lq):
            cells = " ".join(("■" if bool(m[i, j]) else "·").rjust(w) for j in range(lk))
            rows.append(f"q{str(i).ljust(wq)}   {cells}")
        return "\n".join(rows)

    def __and__(self, other: Mask | Tensor) -> Mask:
        return _Combined("and", self, _operand(other, "&"))

    def __or__(self, other: Mask | Tensor) -> Mask:
        return _Combined("or", self, _operand(other, "|"))

    def __invert__(self) -> "Mask":
        return _Not(self)

    def __repr__(self) -> str:  # pragma: no cover - cosmetic
        return f"{type(self).__name__}()"


#: what ``mask=`` accepts: a :class:`Mask`, a bool tensor broadcastable to ``(B, H, Lq, Lk)``, or None (no mask)
MaskLike = Union[Mask, Tensor, None]


def _operand(other: object, op: str) -> Mask:
    """The other side of ``mask & other`` / ``mask | other`` as a Mask (a bool tensor is wrapped)."""
    m = as_mask(other)
    if m is None:
        raise ValueError(f"mask {op} None: a mask combines with a Mask or a bool tensor, got None; drop the {op}")
    return m


class _TensorMask(Mask):
    def __init__(self, t: Tensor):
        if not isinstance(t, Tensor) or t.dtype != torch.bool:
            raise ValueError(
                f"a tensor mask must be a bool tensor (True = attend), got "
                f"{t.dtype if isinstance(t, Tensor) else type(t).__name__}; for an additive float "
                "mask use score_mod=qkv.mods.bias(tensor)"
            )
        self.t = as_4d(t, "a tensor mask")
        self.batch_size = self.t.shape[0] if self.t.shape[0] > 1 else None
        self.num_heads = self.t.shape[1] if self.t.shape[1] > 1 else None

    closed_form = True

    def check(self, B: int, H: int, lq: int, lk: int) -> None:
        check_broadcast(self.t, (B, H, lq, lk), "mask")

    def evaluate(self, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor, lq: int, lk: int) -> Tensor:
        return gather_4d(self.t.to(q_idx.device), b, h, q_idx, kv_idx)

    def dense(self, B: int = 1, H: int = 1, lq: int = 1, lk: int = 1, device: Device = None) -> Tensor:
        self.check(B, H, lq, lk)
        t = self.t if device is None else self.t.to(device)
        return t.expand(t.shape[0], t.shape[1], lq, lk)

    def _block_map(self, lq: int, lk: int, block_q: int, block_k: int, device: Device = None) -> Tensor | None:
        t = self.dense(self.t.shape[0], self.t.shape[1], lq, lk, device)
        Bm, Hm = t.shape[:2]
        nq, nk = -(-lq // block_q), -(-lk // block_k)
        pq, pk = nq * block_q - lq, nk * block_k - lk
        anyv = torch.nn.functional.pad(t, (0, pk, 0, pq), value=False).view(Bm, Hm, nq, block_q, nk, block_k)
        allv = torch.nn.functional.pad(t, (0, pk, 0, pq), value=True).view(Bm, Hm, nq, block_q, nk, block_k)
        anyb, allb = anyv.any(5).any(3), allv.all(5).all(3)
        return torch.where(allb, FULL, torch.where(anyb, PARTIAL, EMPTY))

    def __repr__(self) -> str:
        return f"tensor_mask(shape={tuple(self.t.shape)})"


class _Combined(Mask):
    def __init__(self, op: str, a: Mask, b: Mask):
        self.op, self.a, self.b = op, a, b
        self.children = (a, b)
        self.batch_size = a.batch_size or b.batch_size
        self.num_heads = a.num_heads or b.num_heads

    def band(self, lq: int, lk: int) -> Band | None:
        x, y = self.a.band(lq, lk), self.b.band(lq, lk)
        if x is None or y is None:
            return None
        if self.op == "and":
            return x.intersect(y)
        return x if x.intersect(y) == y else (y if x.intersect(y) == x else None)  # a union is a band if nested

    @property
    def translation_invariant(self) -> bool:
        return self.a.translation_invariant and self.b.translation_invariant

    @property
    def closed_form(self) -> bool:
        return self.a.closed_form and self.b.closed_form

    def evaluate(self, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor, lq: int, lk: int) -> Tensor:
        x = self.a.evaluate(b, h, q_idx, kv_idx, lq, lk)
        y = self.b.evaluate(b, h, q_idx, kv_idx, lq, lk)
        return (x & y) if self.op == "and" else (x | y)

    def _block_map(self, lq: int, lk: int, block_q: int, block_k: int, device: Device = None) -> Tensor | None:
        x = self.a.block_map(lq, lk, block_q, block_k, device)
        y = self.b.block_map(lq, lk, block_q, block_k, device)
        # EMPTY < PARTIAL < FULL: "and" is the minimum, "or" the maximum -- except that two
        # PARTIAL blocks may combine into EMPTY/FULL; PARTIAL is always a safe answer.
        return torch.minimum(x, y) if self.op == "and" else torch.maximum(x, y)

    def __repr__(self) -> str:
        return f"({self.a!r} {'&' if self.op == 'and' else '|'} {self.b!r})"


class _Not(Mask):
    def __init__(self, a: Mask):
        self.a = a
        self.children = (a,)
        self.batch_size, self.num_heads = a.batch_size, a.num_heads

    def band(self, lq: int, lk: int) -> Band | None:
        x = self.a.band(lq, lk)
        if x is not None and x.lo is None and x.hi is not None:
            return Band(x.hi + 1, None)
        if x is not None and x.hi is None and x.lo is not None:
            return Band(None, x.lo - 1)
        return None  # the complement of a two-sided band (or of no band) is no band

    @property
    def translation_invariant(self) -> bool:
        return self.a.translation_invariant

    @property
    def closed_form(self) -> bool:
        return self.a.closed_form

    def evaluate(self, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor, lq: int, lk: int) -> Tensor:
        return ~self.a.evaluate(b, h, q_idx, kv_idx, lq, lk)

    def _block_map(self, lq: int, lk: int, block_q: int, block_k: int, device: Device = None) -> Tensor | None:
        return FULL - self.a.block_map(lq, lk, block_q, block_k, device)

    def __repr__(self) -> str:
        return f"~{self.a!r}"


class _OffsetMask(Mask):
    """The mask of a sub-problem: rows ``q_offset...`` and columns ``kv_offset...`` of a global problem."""

    def __init__(self, mask: Mask, q_offset: int, kv_offset: int, lq_total: int, lk_total: int):
        self.mask, self.q_offset, self.kv_offset = mask, q_offset, kv_offset
        self.lq_total, self.lk_total = lq_total, lk_total
        self.children = (mask,)
        self.batch_size, self.num_heads = mask.batch_size, mask.num_heads

    def band(self, lq: int, lk: int) -> Band | None:
        # kv + kv_off - (q + q_off) in [lo, hi]  <=>  kv - q in [lo + q_off - kv_off, hi + q_off - kv_off]
        inner = self.mask.band(self.lq_total, self.lk_total)
        return None if inner is None else inner.shift(self.q_offset - self.kv_offset)

    @property
    def translation_invariant(self) -> bool:
        return self.mask.translation_invariant

    def check(self, B: int, H: int, lq: int, lk: int) -> None:
        self.mask.check(B, H, self.lq_total, self.lk_total)

    def evaluate(self, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor, lq: int, lk: int) -> Tensor:
        return self.mask.evaluate(b, h, q_idx + self.q_offset, kv_idx + self.kv_offset, self.lq_total, self.lk_total)

    def __repr__(self) -> str:
        return f"offset({self.mask!r}, q+{self.q_offset}, kv+{self.kv_offset})"


def offset(mask: MaskLike, q_offset: int, kv_offset: int, lq_total: int, lk_total: int) -> Mask | None:
    """Restrict ``mask`` of a global ``lq_total x lk_total`` problem to the block whose first query is
    ``q_offset`` and first key is ``kv_offset`` (split-KV, KV-cache chunks and ring attention use
    global positions through this)."""
    m = as_mask(mask)
    return None if m is None else _OffsetMask(m, q_offset, kv_offset, lq_total, lk_total)


def as_mask(mask: object) -> Mask | None:
    """Accept ``None``, a :class:`Mask` or a bool tensor; anything else is a clear error."""
    if mask is None or isinstance(mask, Mask):
        return mask
    if isinstance(mask, Tensor):
        return _TensorMask(mask)
    raise ValueError(
        f"mask must be a qkv.masks.Mask, a bool tensor broadcastable to (B, H, Lq, Lk) or None, "
        f"got {type(mask).__name__}; build one with qkv.masks.causal() / from_function(fn)"
    )
