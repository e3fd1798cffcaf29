"""Boolean attention masks: which (query, key) pairs may attend.

Convention (PyTorch SDPA, JAX): ``True`` = may attend. Shape legend: ``B`` batch, ``H`` heads,
``Lq`` query length, ``Lk`` key length.

Every mask is a :class:`Mask`. It can

* ``evaluate(b, h, q_idx, kv_idx, lq, lk)`` on broadcastable ``int64`` index tensors (the mask at
  those positions of an ``Lq x Lk`` problem);
* ``dense(B, H, lq, lk)`` itself into a bool tensor of shape ``(B|1, H|1, Lq, Lk)``;
* ``block_map(lq, lk, block_q, block_k)`` -> ``int8`` tensor ``(B|1, H|1, nq, nk)`` of
  :data:`EMPTY` / :data:`PARTIAL` / :data:`FULL` per block, which the tiled engine uses to skip
  empty blocks and to skip mask work on full ones (structured masks compute it in closed form);
* compose with ``&``, ``|`` and ``~``;
* ``draw(lq, lk)`` itself as ASCII.

Causal alignment is always explicit. With ``Lq = 3, Lk = 5``::

    causal("bottom_right")      causal("top_left")  (= SDPA is_causal)
      k: 0 1 2 3 4                k: 0 1 2 3 4
    q0   ■ ■ ■ · ·              q0   ■ · · · ·
    q1   ■ ■ ■ ■ ·              q1   ■ ■ · · ·
    q2   ■ ■ ■ ■ ■              q2   ■ ■ ■ · ·

``bottom_right`` aligns the last query with the last key (right for KV-cache decoding: the new
queries are the last positions); ``top_left`` aligns the first query with the first key.

Example:
    >>> from qkv import masks
    >>> print(masks.causal().draw(3, 5))
       k 0 1 2 3 4
    q0   ■ ■ ■ · ·
    q1   ■ ■ ■ ■ ·
    q2   ■ ■ ■ ■ ■
    >>> m = masks.sliding_window(1) & ~masks.causal(align="top_left")
    >>> m.dense(1, 1, 3, 3).int().tolist()
    [[[[0, 0, 0], [0, 0, 0], [0, 0, 0]]]]
"""

from __future__ import annotations

from typing import Callable, Sequence, Union, cast

import torch
from torch import Tensor
from torch.types import Device

from .mask_base import (
    EMPTY,
    FULL,
    PARTIAL,
    Band,
    Mask,
    MaskLike,
    _block_bounds,
    _check_align,
    _Combined,
    _diag_offset,
    _TensorMask,
    as_mask,
    offset,
)

__all__ = [
    "EMPTY",
    "PARTIAL",
    "FULL",
    "Band",
    "Mask",
    "MaskLike",
    "causal",
    "sliding_window",
    "padding",
    "document",
    "prefix_lm",
    "from_function",
    "from_tensor",
    "full",
    "global_window",
    "as_mask",
    "offset",
]


class _Full(Mask):
    translation_invariant = True
    closed_form = True

    def band(self, lq: int, lk: int) -> Band | None:
        return Band(None, None)

    def evaluate(self, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor, lq: int, lk: int) -> Tensor:
        return torch.ones((), dtype=torch.bool, device=q_idx.device).expand(
            torch.broadcast_shapes(q_idx.shape, kv_idx.shape)
        )

    def _block_map(self, lq: int, lk: int, block_q: int, block_k: int, device: Device = None) -> Tensor | None:
        return torch.full((1, 1, -(-lq // block_q), -(-lk // block_k)), FULL, dtype=torch.int8, device=device)

    def __repr__(self) -> str:
        return "full()"


def full() -> Mask:
    """Every query attends to every key (the same as no mask)."""
    return _Full()


class _Diagonal(Mask):
    """Band ``off - left <= kv - q <= off + right`` (None = unbounded); causal and sliding windows."""

    translation_invariant = True
    closed_form = True

    def __init__(self, left: int | None, right: int | None, align: str, name: str):
        self.left, self.right, self.align, self.name = left, right, _check_align(align), name

    def band(self, lq: int, lk: int) -> Band | None:
        off = _diag_offset(self.align, lq, lk)
        return Band(None if self.left is None else off - self.left, None if self.right is None else off + self.right)

    def evaluate(self, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor, lq: int, lk: int) -> Tensor:
        d = kv_idx - q_idx - _diag_offset(self.align, lq, lk)
        ok = torch.ones((), dtype=torch.bool, device=d.device).expand(d.shape)
        if self.right is not None:
            ok = ok & (d <= self.right)
        if self.left is not None:
            ok = ok & (d >= -self.left)
        return ok

    def _block_map(self, lq: int, lk: int, block_q: int, block_k: int, device: Device = None) -> Tensor | None:
        off = _diag_offset(self.align, lq, lk)
        qs, qe = _block_bounds(lq, block_q, device)
        ks, ke = _block_bounds(lk, block_k, device)
        dmin = ks.view(1, -1) - qe.view(-1, 1) - off  # smallest kv - q - off in the block
        dmax = ke.view(1, -1) - qs.view(-1, 1) - off
        empty = torch.zeros_like(dmin, dtype=torch.bool)
        full_ = torch.ones_like(dmin, dtype=torch.bool)
        if self.right is not None:
            empty |= dmin > self.right
            full_ &= dmax <= self.right
        if self.left is not None:
            empty |= dmax < -self.left
            full_ &= dmin >= -self.left
        out = torch.where(full_, FULL, torch.where(empty, EMPTY, PARTIAL))
        return out.to(torch.int8).view(1, 1, *out.shape)

    def __repr__(self) -> str:
        return self.name


def causal(align: str = "bottom_right") -> Mask:
    """Query ``i`` sees keys ``j <= i + off`` with ``off = Lk - Lq`` (bottom_right) or 0 (top_left).

    ``causal("top_left")`` equals ``scaled_dot_product_attention(..., is_causal=True)``.
    """
    return _Diagonal(None, 0, align, f"causal(align={align!r})")


def sliding_window(left: int, right: int = 0, align: str = "bottom_right") -> Mask:
    """Query ``i`` sees keys ``i + off - left ... i + off + right`` (a band around the aligned diagonal).

    ``sliding_window(w)`` is causal local attention over the last ``w + 1`` keys (Mistral-style
    window ``w + 1``); ``sliding_window(w, w)`` is symmetric local attention.
    """
    for nm, val in (("left", left), ("right", right)):
        if not isinstance(val, int) or isinstance(val, bool) or val < 0:
            raise ValueError(
                f"sliding_window: {nm} must be a non-negative int (number of keys), got {val!r}; "
                "pass e.g. sliding_window(256) for a causal window of the last 257 keys"
            )
    return _Diagonal(left, right, align, f"sliding_window({left}, {right}, align={align!r})")


#: lengths or ids: an integer tensor or a (nested) list of ints
Ints = Union[Tensor, Sequence[int], Sequence[Sequence[int]]]


def _as_lengths(x: Ints, name: str) -> Tensor:
    t = torch.as_tensor(x)
    if t.dim() != 1 or t.dtype.is_floating_point or t.dtype == torch.bool:
        raise ValueError(
            f"padding: {name} must be a 1-D integer tensor of shape (B,), got "
            f"dtype {t.dtype} shape {tuple(t.shape)}; pass e.g. torch.tensor([5, 3])"
        )
    if not torch.compiler.is_compiling() and (t < 0).any():  # values are not read in traced code
        raise ValueError(f"padding: {name} must be >= 0, got {t.tolist()}")
    return t.long()


class _Padding(Mask):
    closed_form = True

    def __init__(self, kv_lengths: Ints, q_lengths: Ints | None = None):
        self.kv_lengths = _as_lengths(kv_lengths, "kv_lengths")
        self.q_lengths = None if q_lengths is None else _as_lengths(q_lengths, "q_lengths")
        if self.q_lengths is not None and self.q_lengths.shape != self.kv_lengths.shape:
            raise ValueError(
                f"padding: q_lengths has shape {tuple(self.q_lengths.shape)} but kv_lengths has "
                f"{tuple(self.kv_lengths.shape)}; give one length per batch element for both"
            )
        self.batch_size = self.kv_lengths.shape[0]

    def key_lengths(self) -> Tensor | None:
        return self.kv_lengths if self.q_lengths is None else None

    def evaluate(self, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor, lq: int, lk: int) -> Tensor:
        kvl = self.kv_lengths.to(kv_idx.device)[b]
        ok = kv_idx < kvl
        if self.q_lengths is not None:
            ok = ok & (q_idx < self.q_lengths.to(q_idx.device)[b])
        return ok

    def _block_map(self, lq: int, lk: int, block_q: int, block_k: int, device: Device = None) -> Tensor | None:
        qs, qe = _block_bounds(lq, block_q, device)
        ks, ke = _block_bounds(lk, block_k, device)
        kvl = self.kv_lengths.to(device).view(-1, 1, 1, 1)
        kfull = ke.view(1, 1, 1, -1) < kvl
        kempty = ks.view(1, 1, 1, -1) >= kvl
        if self.q_lengths is None:
            qfull = torch.ones(1, 1, len(qs), 1, dtype=torch.bool, device=device)
            qempty = torch.zeros_like(qfull)
        else:
            ql = self.q_lengths.to(device).view(-1, 1, 1, 1)
            qfull = qe.view(1, 1, -1, 1) < ql
            qempty = qs.view(1, 1, -1, 1) >= ql
        out = torch.where(kfull & qfull, FULL, torch.where(kempty | qempty, EMPTY, PARTIAL))
        return out.to(torch.int8)

    def __repr__(self) -> str:
        return f"padding({self.kv_lengths.tolist()}, {None if self.q_lengths is None else self.q_lengths.tolist()})"


def padding(kv_lengths: Ints, q_lengths: Ints | None = None) -> Mask:
    """Keys ``j >= kv_lengths[b]`` (and queries ``i >= q_lengths[b]``) are padding: never attended.

    A padded query row attends to nothing, so its output is 0 (never NaN).

    Args:
        kv_lengths: ``(B,)`` number of real keys per batch element.
        q_lengths: optional ``(B,)`` number of real queries per batch element.
    """
    return _Padding(kv_lengths, q_lengths)


def _as_ids(x: Ints, name: str) -> Tensor:
    t = torch.as_tensor(x)
    if t.dim() not in (1, 2) or t.dtype.is_floating_point or t.dtype == torch.bool:
        raise ValueError(
            f"document: {name} must be an integer tensor of shape (L,) or (B, L), got dtype "
            f"{t.dtype} shape {tuple(t.shape)}; e.g. torch.tensor([0, 0, 0, 1, 1])"
        )
    return (t if t.dim() == 2 else t.unsqueeze(0)).long()


class _Document(Mask):
    closed_form = True

    def __init__(self, q_ids: Ints, kv_ids: Ints | None = None):
        self.q_ids = _as_ids(q_ids, "q_ids")
        self.kv_ids = self.q_ids if kv_ids is None else _as_ids(kv_ids, "kv_ids")
        if self.q_ids.shape[0] != self.kv_ids.shape[0]:
            raise ValueError(
                f"document: q_ids has batch {self.q_ids.shape[0]} but kv_ids has "
                f"{self.kv_ids.shape[0]}; give both the same batch size (or 1-D ids)"
            )
        self.batch_size = self.q_ids.shape[0] if self.q_ids.shape[0] > 1 else None

    def _check(self, lq: int, lk: int) -> None:
        if self.q_ids.shape[1] != lq or self.kv_ids.shape[1] != lk:
            raise ValueError(
                f"document mask has ids for Lq={self.q_ids.shape[1]}, Lk={self.kv_ids.shape[1]} "
                f"but the attention has Lq={lq}, Lk={lk}; give one document id per position"
            )

    def evaluate(self, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor, lq: int, lk: int) -> Tensor:
        self._check(lq, lk)
        bb = b if self.q_ids.shape[0] > 1 else torch.zeros_like(b)
        qi = self.q_ids.to(q_idx.device)[bb, q_idx]
        ki = self.kv_ids.to(kv_idx.device)[bb, kv_idx]
        return qi == ki

    def _block_map(self, lq: int, lk: int, block_q: int, block_k: int, device: Device = None) -> Tensor | None:
        # Per block: the min and max document id on each side. A block is FULL when both sides hold
        # one and the same id, EMPTY when the id ranges do not overlap (exact for sorted ids, i.e.
        # packed sequences; otherwise conservative: PARTIAL).
        self._check(lq, lk)

        def ranges(ids: Tensor, block: int) -> tuple[Tensor, Tensor]:
            L = ids.shape[1]
            n = -(-L // block)
            pad = n * block - L
            # pad the last block by repeating the last id (F.pad's float fill value cannot hold int64 limits)
            padded = torch.cat([ids, ids[:, -1:].expand(-1, pad)], dim=1).view(-1, n, block)
            return padded.amin(-1), padded.amax(-1)

        qlo, qhi = ranges(self.q_ids.to(device), block_q)
        klo, khi = ranges(self.kv_ids.to(device), block_k)
        qlo, qhi = qlo[:, :, None], qhi[:, :, None]
        klo, khi = klo[:, None, :], khi[:, None, :]
        full_ = (qlo == qhi) & (klo == khi) & (qlo == klo)
        empty = (qhi < klo) | (khi < qlo)
        out = torch.where(full_, FULL, torch.where(empty, EMPTY, PARTIAL)).to(torch.int8)
        return out[:, None]

    def __repr__(self) -> str:
        return "document(...)"


def document(q_ids: Ints, kv_ids: Ints | None = None) -> Mask:
    """Packed sequences: query ``i`` attends key ``j`` only within the same document id.

    Args:
        q_ids: ``(Lq,)`` or ``(B, Lq)`` integer document id of every query position.
        kv_ids: ``(Lk,)`` or ``(B, Lk)`` ids of the keys (default: ``q_ids``, self-attention).

    Combine with :func:`causal` for packed causal language modelling: ``document(ids) & causal()``.
    """
    return _Document(q_ids, kv_ids)


class _Prefix(Mask):
    closed_form = True

    def __init__(self, prefix_length: int | Ints):
        try:
            t = torch.as_tensor(prefix_length)
        except (TypeError, ValueError, RuntimeError):
            t = None
        if t is None or t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool or t.dim() > 1:
            ok = False
        else:  # values are not read in traced code
            ok = torch.compiler.is_compiling() or not bool((t < 0).any())
        if t is None or not ok:
            raise ValueError(
                f"prefix_lm: prefix_length must be a non-negative int or a (B,) integer tensor, got {prefix_length!r}; "
                "pass e.g. 3 or torch.tensor([3, 5])"
            )
        self.prefix = t.long()
        self.batch_size = t.shape[0] if t.dim() == 1 else None

    def __repr__(self) -> str:
        return f"prefix_keys({_lengths(self.prefix)})"

    def evaluate(self, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor, lq: int, lk: int) -> Tensor:
        p = self.prefix.to(kv_idx.device)
        p = p[b] if p.dim() == 1 else p
        return kv_idx < p

    def _block_map(self, lq: int, lk: int, block_q: int, block_k: int, device: Device = None) -> Tensor | None:
        ks, ke = _block_bounds(lk, block_k, device)
        nq = -(-lq // block_q)
        p = self.prefix.to(device).view(-1, 1, 1, 1)
        out = torch.where(ke.view(1, 1, 1, -1) < p, FULL, torch.where(ks.view(1, 1, 1, -1) >= p, EMPTY, PARTIAL))
        return out.expand(-1, 1, nq, -1).to(torch.int8)


class _PrefixLM(_Combined):
    """``prefix_keys | causal``, shown as the call that built it."""

    def __init__(self, prefix: _Prefix, align: str):
        super().__init__("or", prefix, causal(align))
        self.align = align

    def __repr__(self) -> str:
        return f"prefix_lm({_lengths(cast(_Prefix, self.a).prefix)}, align={self.align!r})"


def _lengths(p: Tensor) -> str:
    """An int, a short list, or the shape of a long (B,) tensor of lengths."""
    if p.dim() == 0:
        return str(int(p))
    return str(p.tolist()) if p.numel() <= 8 else f"tensor of shape {tuple(p.shape)}"


def prefix_lm(prefix_length: int | Ints, align: str = "bottom_right") -> Mask:
    """Prefix-LM: every query sees the first ``prefix_length`` keys bidirectionally, the rest causally.

    Equal to ``causal(align) | (keys < prefix_length)``. ``prefix_length`` is an int or a ``(B,)`` tensor.
    """
    return _PrefixLM(_Prefix(prefix_length), align)


class _Function(Mask):
    def __init__(self, fn: Callable[..., Tensor], batch_size: int | None = None, num_heads: int | None = None):
        if not callable(fn):
            raise ValueError(f"from_function expects a callable fn(b, h, q_idx, kv_idx) -> bool tensor, got {fn!r}")
        self.fn, self.batch_size, self.num_heads = fn, batch_size, num_heads

    def fingerprint(self) -> object:
        return None  # a function's behaviour cannot be fingerprinted

    def check(self, B: int, H: int, lq: int, lk: int) -> None:
        """Also refuse a function that depends on ``b``/``h`` without ``batch_size``/``num_heads``: it would be
        evaluated for batch element / head 0 only and broadcast (silently wrong). One call on 1-element index
        tensors finds it: a result with a batch (head) dim depends on ``b`` (``h``)."""
        super().check(B, H, lq, lk)
        for size, given, dim, arg, name in (
            (B, self.batch_size, 0, "batch_size", "b"),
            (H, self.num_heads, 1, "num_heads", "h"),
        ):
            if size < 2 or given is not None or lq == 0 or lk == 0:
                continue
            idx = [torch.zeros(1, 1, 1, 1, dtype=torch.long) for _ in range(4)]
            idx[dim] = torch.arange(size).view([size if d == dim else 1 for d in range(4)])
            try:
                out = self.fn(*idx)
            except Exception:  # the real evaluation reports the function's own errors
                continue
            if isinstance(out, Tensor) and out.dim() == 4 and out.shape[dim] == size:
                raise ValueError(
                    f"mask function {self!r} depends on {name} (its result varies along dim {dim}, {size} entries) "
                    f"and needs {arg}, got {arg}=None; pass masks.from_function(fn, {arg}={size}) -- without it "
                    f"only {name}=0 would be evaluated and broadcast"
                )

    def evaluate(self, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor, lq: int, lk: int) -> Tensor:
        out = self.fn(b, h, q_idx, kv_idx)
        if not isinstance(out, Tensor) or out.dtype != torch.bool:
            got = out.dtype if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(
                f"mask function must return a bool tensor, got {got} from {self!r}; "
                "return a comparison such as `q_idx >= kv_idx`"
            )
        want = torch.broadcast_shapes(b.shape, h.shape, q_idx.shape, kv_idx.shape)
        try:
            ok = torch.broadcast_shapes(out.shape, want) == want
        except RuntimeError:
            ok = False
        if not ok:
            raise ValueError(
                f"mask function {self!r} returned shape {tuple(out.shape)} for index tensors that "
                f"broadcast to {tuple(want)}; compute it from b, h, q_idx, kv_idx (e.g. "
                "`q_idx >= kv_idx`) -- a fixed (Lq, Lk) tensor belongs in mask=tensor"
            )
        return out

    def __repr__(self) -> str:
        return f"from_function({getattr(self.fn, '__name__', self.fn)!r})"


def from_function(
    fn: Callable[[Tensor, Tensor, Tensor, Tensor], Tensor],
    *,
    batch_size: int | None = None,
    num_heads: int | None = None,
) -> Mask:
    """A mask from ``fn(b, h, q_idx, kv_idx) -> bool tensor`` (FlexAttention's ``mask_mod``).

    The arguments are broadcastable int64 index tensors; return a bool tensor that broadcasts
    with them. Give ``batch_size``/``num_heads`` when the function depends on ``b``/``h`` so that
    ``dense``/``block_map`` evaluate every batch element/head; without them such a function is refused
    with a ``ValueError`` (it would be evaluated for ``b = 0``/``h = 0`` only).

    Example:
        >>> from qkv import masks
        >>> m = masks.from_function(lambda b, h, q, kv: (q - kv) % 2 == 0)
        >>> m.dense(1, 1, 2, 2)[0, 0].tolist()
        [[True, False], [False, True]]
    """
    return _Function(fn, batch_size, num_heads)


def from_tensor(t: Tensor) -> Mask:
    """Wrap a bool tensor broadcastable to ``(B, H, Lq, Lk)`` (True = attend)."""
    return _TensorMask(t)


class _GlobalTokens(Mask):
    """Query ``q`` and key ``kv`` may attend iff ``q < g`` or ``kv < g`` (the first ``g`` tokens are global)."""

    closed_form = True

    def __init__(self, num_global: int):
        self.num_global = num_global

    def evaluate(self, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor, lq: int, lk: int) -> Tensor:
        return (q_idx < self.num_global) | (kv_idx < self.num_global)

    def _block_map(self, lq: int, lk: int, block_q: int, block_k: int, device: Device = None) -> Tensor | None:
        g = self.num_global
        qs, qe = _block_bounds(lq, block_q, device)
        ks, ke = _block_bounds(lk, block_k, device)
        full_ = (qe.view(-1, 1) < g) | (ke.view(1, -1) < g)  # every row or every key of the block is global
        empty = (qs.view(-1, 1) >= g) & (ks.view(1, -1) >= g)
        out = torch.where(full_, FULL, torch.where(empty, EMPTY, PARTIAL))
        return out.to(torch.int8).view(1, 1, *out.shape)

    def __repr__(self) -> str:
        return f"global_tokens({self.num_global})"


def global_window(num_global: int, left: int, right: int = 0, align: str = "bottom_right") -> Mask:
    """Longformer/BigBird-style local + global attention: the first ``num_global`` tokens attend to every key
    and are attended by every query; every other pair follows :func:`sliding_window` ``(left, right, align)``.

    Equal to ``sliding_window(left, right, align) | (q < num_global) | (kv < num_global)``. With
    ``num_global=1, left=1`` on 4 tokens::

          k 0 1 2 3
        q0  ■ ■ ■ ■      <- the global token sees everything
        q1  ■ ■ · ·
        q2  ■ ■ ■ ·      <- everyone sees the global token, plus its window
        q3  ■ · ■ ■

    Blocks outside both the window and the global rows/columns are EMPTY and skipped by block-sparse engines.
    """
    if not isinstance(num_global, int) or isinstance(num_global, bool) or num_global < 0:
        raise ValueError(
            f"global_window: num_global must be a non-negative int (number of global tokens), got "
            f"{num_global!r}; e.g. global_window(1, 256) makes token 0 global"
        )
    return sliding_window(left, right, align) | _GlobalTokens(num_global)
