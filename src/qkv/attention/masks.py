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

from typing import Callable

import torch
from torch import Tensor

__all__ = [
    "EMPTY",
    "PARTIAL",
    "FULL",
    "Mask",
    "causal",
    "sliding_window",
    "padding",
    "document",
    "prefix_lm",
    "from_function",
    "from_tensor",
    "full",
    "as_mask",
    "offset",
]

EMPTY, PARTIAL, FULL = 0, 1, 2
_ALIGNS = ("bottom_right", "top_left")


def _check_align(align: str) -> str:
    if align not in _ALIGNS:
        raise ValueError(f"align must be one of {_ALIGNS}, got {align!r}; "
                         "use 'bottom_right' for KV-cache decoding, 'top_left' to match SDPA's is_causal")
    return align


def _diag_offset(align: str, lq: int, lk: int) -> int:
    """Key index aligned with query 0: ``Lk - Lq`` for bottom_right, 0 for top_left."""
    return lk - lq if align == "bottom_right" else 0


def _index_grid(B: int, H: int, lq: int, lk: int, device=None):
    """Broadcastable index tensors b (B,1,1,1), h (1,H,1,1), q (1,1,Lq,1), kv (1,1,1,Lk)."""
    b = torch.arange(B, device=device).view(B, 1, 1, 1)
    h = torch.arange(H, device=device).view(1, H, 1, 1)
    q = torch.arange(lq, device=device).view(1, 1, lq, 1)
    kv = torch.arange(lk, device=device).view(1, 1, 1, lk)
    return b, h, q, kv


def _block_bounds(length: int, block: int, device=None):
    """First and last (inclusive) index of each block: two (n,) int64 tensors."""
    starts = torch.arange(0, max(length, 0), block, device=device)
    ends = torch.clamp(starts + block, max=length) - 1
    return starts, ends


class Mask:
    """A boolean attention mask (``True`` = may attend). Subclasses implement :meth:`evaluate`.

    ``batch_size`` / ``num_heads`` are the sizes a mask depends on (``None`` = broadcast).
    """

    batch_size: int | None = None
    num_heads: int | None = None

    # -- what subclasses provide -------------------------------------------------------------
    def evaluate(self, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor, lq: int, lk: int) -> Tensor:
        """The mask at broadcastable index tensors of an ``lq x lk`` problem (bool tensor)."""
        raise NotImplementedError(f"{type(self).__name__} must implement evaluate()")

    def _block_map(self, lq: int, lk: int, block_q: int, block_k: int, device=None) -> Tensor | None:
        """Closed-form block map, or None to evaluate the mask block-row by block-row."""
        return None

    # -- derived -----------------------------------------------------------------------------
    def dense(self, B: int = 1, H: int = 1, lq: int = 1, lk: int = 1, device=None) -> Tensor:
        """Materialise as a bool tensor of shape ``(B|1, H|1, lq, lk)``."""
        Bm = B if self.batch_size is not None else 1
        Hm = H if self.num_heads is not None else 1
        b, h, q, kv = _index_grid(Bm, Hm, lq, lk, device)
        out = self.evaluate(b, h, q, kv, lq, lk)
        return out.expand(Bm, Hm, lq, lk)

    def block_map(self, lq: int, lk: int, block_q: int, block_k: int, device=None) -> Tensor:
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
        b, h, _, kv = _index_grid(Bm, Hm, 0, lk, device)
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

    def __and__(self, other: "Mask") -> "Mask":
        return _Combined("and", as_mask(self), as_mask(other))

    def __or__(self, other: "Mask") -> "Mask":
        return _Combined("or", as_mask(self), as_mask(other))

    def __invert__(self) -> "Mask":
        return _Not(self)

    def __repr__(self) -> str:  # pragma: no cover - cosmetic
        return f"{type(self).__name__}()"


class _Full(Mask):
    def evaluate(self, b, h, q_idx, kv_idx, lq, lk):
        return torch.ones((), dtype=torch.bool, device=q_idx.device).expand(
            torch.broadcast_shapes(q_idx.shape, kv_idx.shape))

    def _block_map(self, lq, lk, block_q, block_k, device=None):
        return torch.full((1, 1, -(-lq // block_q), -(-lk // block_k)), FULL, dtype=torch.int8, device=device)

    def __repr__(self):
        return "full()"


def full() -> Mask:
    """Every query attends to every key (the same as no mask)."""
    return _Full()


class _Diagonal(Mask):
    """Band ``off - left <= kv - q <= off + right`` (None = unbounded); causal and sliding windows."""

    def __init__(self, left: int | None, right: int | None, align: str, name: str):
        self.left, self.right, self.align, self.name = left, right, _check_align(align), name

    def evaluate(self, b, h, q_idx, kv_idx, lq, lk):
        d = kv_idx - q_idx - _diag_offset(self.align, lq, lk)
        ok = torch.ones((), dtype=torch.bool, device=d.device).expand(d.shape)
        if self.right is not None:
            ok = ok & (d <= self.right)
        if self.left is not None:
            ok = ok & (d >= -self.left)
        return ok

    def _block_map(self, lq, lk, block_q, block_k, device=None):
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

    def __repr__(self):
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
            raise ValueError(f"sliding_window: {nm} must be a non-negative int (number of keys), got {val!r}; "
                             "pass e.g. sliding_window(256) for a causal window of the last 257 keys")
    return _Diagonal(left, right, align, f"sliding_window({left}, {right}, align={align!r})")


def _as_lengths(x, name: str) -> Tensor:
    t = torch.as_tensor(x)
    if t.dim() != 1 or t.dtype.is_floating_point or t.dtype == torch.bool:
        raise ValueError(f"padding: {name} must be a 1-D integer tensor of shape (B,), got "
                         f"dtype {t.dtype} shape {tuple(t.shape)}; pass e.g. torch.tensor([5, 3])")
    if (t < 0).any():
        raise ValueError(f"padding: {name} must be >= 0, got {t.tolist()}")
    return t.long()


class _Padding(Mask):
    def __init__(self, kv_lengths, q_lengths=None):
        self.kv_lengths = _as_lengths(kv_lengths, "kv_lengths")
        self.q_lengths = None if q_lengths is None else _as_lengths(q_lengths, "q_lengths")
        if self.q_lengths is not None and self.q_lengths.shape != self.kv_lengths.shape:
            raise ValueError(f"padding: q_lengths has shape {tuple(self.q_lengths.shape)} but kv_lengths has "
                             f"{tuple(self.kv_lengths.shape)}; give one length per batch element for both")
        self.batch_size = self.kv_lengths.shape[0]

    def evaluate(self, b, h, q_idx, kv_idx, lq, lk):
        kvl = self.kv_lengths.to(kv_idx.device)[b]
        ok = kv_idx < kvl
        if self.q_lengths is not None:
            ok = ok & (q_idx < self.q_lengths.to(q_idx.device)[b])
        return ok

    def _block_map(self, lq, lk, block_q, block_k, device=None):
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

    def __repr__(self):
        return f"padding({self.kv_lengths.tolist()}, {None if self.q_lengths is None else self.q_lengths.tolist()})"


def padding(kv_lengths, q_lengths=None) -> Mask:
    """Keys ``j >= kv_lengths[b]`` (and queries ``i >= q_lengths[b]``) are padding: never attended.

    A padded query row attends to nothing, so its output is 0 (never NaN).

    Args:
        kv_lengths: ``(B,)`` number of real keys per batch element.
        q_lengths: optional ``(B,)`` number of real queries per batch element.
    """
    return _Padding(kv_lengths, q_lengths)


def _as_ids(x, name: str) -> Tensor:
    t = torch.as_tensor(x)
    if t.dim() not in (1, 2) or t.dtype.is_floating_point or t.dtype == torch.bool:
        raise ValueError(f"document: {name} must be an integer tensor of shape (L,) or (B, L), got dtype "
                         f"{t.dtype} shape {tuple(t.shape)}; e.g. torch.tensor([0, 0, 0, 1, 1])")
    return (t if t.dim() == 2 else t.unsqueeze(0)).long()


class _Document(Mask):
    def __init__(self, q_ids, kv_ids=None):
        self.q_ids = _as_ids(q_ids, "q_ids")
        self.kv_ids = self.q_ids if kv_ids is None else _as_ids(kv_ids, "kv_ids")
        if self.q_ids.shape[0] != self.kv_ids.shape[0]:
            raise ValueError(f"document: q_ids has batch {self.q_ids.shape[0]} but kv_ids has "
                             f"{self.kv_ids.shape[0]}; give both the same batch size (or 1-D ids)")
        self.batch_size = self.q_ids.shape[0] if self.q_ids.shape[0] > 1 else None

    def _check(self, lq, lk):
        if self.q_ids.shape[1] != lq or self.kv_ids.shape[1] != lk:
            raise ValueError(f"document mask has ids for Lq={self.q_ids.shape[1]}, Lk={self.kv_ids.shape[1]} "
                             f"but the attention has Lq={lq}, Lk={lk}; give one document id per position")

    def evaluate(self, b, h, q_idx, kv_idx, lq, lk):
        self._check(lq, lk)
        bb = b if self.q_ids.shape[0] > 1 else torch.zeros_like(b)
        qi = self.q_ids.to(q_idx.device)[bb, q_idx]
        ki = self.kv_ids.to(kv_idx.device)[bb, kv_idx]
        return qi == ki

    def _block_map(self, lq, lk, block_q, block_k, device=None):
        # Per block: the min and max document id on each side. A block is FULL when both sides hold
        # one and the same id, EMPTY when the id ranges do not overlap (exact for sorted ids, i.e.
        # packed sequences; otherwise conservative: PARTIAL).
        self._check(lq, lk)

        def ranges(ids, block):
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

    def __repr__(self):
        return "document(...)"


def document(q_ids, kv_ids=None) -> Mask:
    """Packed sequences: query ``i`` attends key ``j`` only within the same document id.

    Args:
        q_ids: ``(Lq,)`` or ``(B, Lq)`` integer document id of every query position.
        kv_ids: ``(Lk,)`` or ``(B, Lk)`` ids of the keys (default: ``q_ids``, self-attention).

    Combine with :func:`causal` for packed causal language modelling: ``document(ids) & causal()``.
    """
    return _Document(q_ids, kv_ids)


class _Prefix(Mask):
    def __init__(self, prefix_length):
        t = torch.as_tensor(prefix_length)
        if t.dtype.is_floating_point or t.dim() > 1 or (t < 0).any():
            raise ValueError(f"prefix_lm: prefix_length must be a non-negative int or a (B,) integer tensor, "
                             f"got {prefix_length!r}")
        self.prefix = t.long()
        self.batch_size = t.shape[0] if t.dim() == 1 else None

    def evaluate(self, b, h, q_idx, kv_idx, lq, lk):
        p = self.prefix.to(kv_idx.device)
        p = p[b] if p.dim() == 1 else p
        return kv_idx < p

    def _block_map(self, lq, lk, block_q, block_k, device=None):
        ks, ke = _block_bounds(lk, block_k, device)
        nq = -(-lq // block_q)
        p = self.prefix.to(device).view(-1, 1, 1, 1)
        out = torch.where(ke.view(1, 1, 1, -1) < p, FULL, torch.where(ks.view(1, 1, 1, -1) >= p, EMPTY, PARTIAL))
        return out.expand(-1, 1, nq, -1).to(torch.int8)


def prefix_lm(prefix_length, align: str = "bottom_right") -> Mask:
    """Prefix-LM: every query sees the first ``prefix_length`` keys bidirectionally, the rest causally.

    Equal to ``causal(align) | (keys < prefix_length)``. ``prefix_length`` is an int or a ``(B,)`` tensor.
    """
    return _Prefix(prefix_length) | causal(align)


class _Function(Mask):
    def __init__(self, fn: Callable[..., Tensor], batch_size=None, num_heads=None):
        if not callable(fn):
            raise ValueError(f"from_function expects a callable fn(b, h, q_idx, kv_idx) -> bool tensor, got {fn!r}")
        self.fn, self.batch_size, self.num_heads = fn, batch_size, num_heads

    def evaluate(self, b, h, q_idx, kv_idx, lq, lk):
        out = self.fn(b, h, q_idx, kv_idx)
        if not isinstance(out, Tensor) or out.dtype != torch.bool:
            got = out.dtype if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(f"mask function must return a bool tensor, got {got}; "
                             "return a comparison such as `q_idx >= kv_idx`")
        return out

    def __repr__(self):
        return f"from_function({getattr(self.fn, '__name__', self.fn)!r})"


def from_function(fn: Callable[[Tensor, Tensor, Tensor, Tensor], Tensor], *, batch_size: int | None = None,
                  num_heads: int | None = None) -> Mask:
    """A mask from ``fn(b, h, q_idx, kv_idx) -> bool tensor`` (FlexAttention's ``mask_mod``).

    The arguments are broadcastable int64 index tensors; return a bool tensor that broadcasts
    with them. Give ``batch_size``/``num_heads`` when the function depends on ``b``/``h`` so that
    ``dense``/``block_map`` evaluate every batch element/head.

    Example:
        >>> from qkv import masks
        >>> m = masks.from_function(lambda b, h, q, kv: (q - kv) % 2 == 0)
        >>> m.dense(1, 1, 2, 2)[0, 0].tolist()
        [[True, False], [False, True]]
    """
    return _Function(fn, batch_size, num_heads)


class _TensorMask(Mask):
    def __init__(self, t: Tensor):
        if not isinstance(t, Tensor) or t.dtype != torch.bool:
            raise ValueError(f"a tensor mask must be a bool tensor (True = attend), got "
                             f"{t.dtype if isinstance(t, Tensor) else type(t).__name__}; for an additive float "
                             "mask use score_mod=qkv.mods.bias(tensor)")
        if t.dim() > 4:
            raise ValueError(f"a tensor mask must have at most 4 dims broadcastable to (B, H, Lq, Lk), "
                             f"got shape {tuple(t.shape)}")
        self.t = t.reshape((1,) * (4 - t.dim()) + tuple(t.shape))
        self.batch_size = self.t.shape[0] if self.t.shape[0] > 1 else None
        self.num_heads = self.t.shape[1] if self.t.shape[1] > 1 else None

    def check(self, B, H, lq, lk):
        for have, want, nm in zip(self.t.shape, (B, H, lq, lk), "B H Lq Lk".split()):
            if have not in (1, want):
                raise ValueError(f"mask of shape {tuple(self.t.shape)} is not broadcastable to "
                                 f"(B, H, Lq, Lk) = {(B, H, lq, lk)} ({nm}: {have} vs {want}); "
                                 "give each dim either its full size or 1")

    def evaluate(self, b, h, q_idx, kv_idx, lq, lk):
        t = self.t.to(q_idx.device)
        idx = [i if t.shape[d] > 1 else torch.zeros_like(i) for d, i in enumerate((b, h, q_idx, kv_idx))]
        return t[idx[0], idx[1], idx[2], idx[3]]

    def dense(self, B=1, H=1, lq=1, lk=1, device=None):
        self.check(B, H, lq, lk)
        t = self.t if device is None else self.t.to(device)
        return t.expand(t.shape[0], t.shape[1], lq, lk)

    def _block_map(self, lq, lk, block_q, block_k, device=None):
        t = self.dense(self.t.shape[0], self.t.shape[1], lq, lk, device)
        Bm, Hm = t.shape[:2]
        nq, nk = -(-lq // block_q), -(-lk // block_k)
        pq, pk = nq * block_q - lq, nk * block_k - lk
        anyv = torch.nn.functional.pad(t, (0, pk, 0, pq), value=False).view(Bm, Hm, nq, block_q, nk, block_k)
        allv = torch.nn.functional.pad(t, (0, pk, 0, pq), value=True).view(Bm, Hm, nq, block_q, nk, block_k)
        anyb, allb = anyv.any(5).any(3), allv.all(5).all(3)
        return torch.where(allb, FULL, torch.where(anyb, PARTIAL, EMPTY))

    def __repr__(self):
        return f"tensor_mask(shape={tuple(self.t.shape)})"


def from_tensor(t: Tensor) -> Mask:
    """Wrap a bool tensor broadcastable to ``(B, H, Lq, Lk)`` (True = attend)."""
    return _TensorMask(t)


class _Combined(Mask):
    def __init__(self, op: str, a: Mask, b: Mask):
        self.op, self.a, self.b = op, a, b
        self.batch_size = a.batch_size or b.batch_size
        self.num_heads = a.num_heads or b.num_heads

    def evaluate(self, b, h, q_idx, kv_idx, lq, lk):
        x = self.a.evaluate(b, h, q_idx, kv_idx, lq, lk)
        y = self.b.evaluate(b, h, q_idx, kv_idx, lq, lk)
        return (x & y) if self.op == "and" else (x | y)

    def _block_map(self, lq, lk, block_q, block_k, device=None):
        x = self.a.block_map(lq, lk, block_q, block_k, device)
        y = self.b.block_map(lq, lk, block_q, block_k, device)
        # EMPTY < PARTIAL < FULL: "and" is the minimum, "or" the maximum -- except that two
        # PARTIAL blocks may combine into EMPTY/FULL; PARTIAL is always a safe answer.
        return torch.minimum(x, y) if self.op == "and" else torch.maximum(x, y)

    def __repr__(self):
        return f"({self.a!r} {'&' if self.op == 'and' else '|'} {self.b!r})"


class _Not(Mask):
    def __init__(self, a: Mask):
        self.a = a
        self.batch_size, self.num_heads = a.batch_size, a.num_heads

    def evaluate(self, b, h, q_idx, kv_idx, lq, lk):
        return ~self.a.evaluate(b, h, q_idx, kv_idx, lq, lk)

    def _block_map(self, lq, lk, block_q, block_k, device=None):
        return FULL - self.a.block_map(lq, lk, block_q, block_k, device)

    def __repr__(self):
        return f"~{self.a!r}"


class _Offset(Mask):
    """The mask of a sub-problem: rows ``q_offset...`` and columns ``kv_offset...`` of a global problem."""

    def __init__(self, mask: Mask, q_offset: int, kv_offset: int, lq_total: int, lk_total: int):
        self.mask, self.q_offset, self.kv_offset = mask, q_offset, kv_offset
        self.lq_total, self.lk_total = lq_total, lk_total
        self.batch_size, self.num_heads = mask.batch_size, mask.num_heads

    def evaluate(self, b, h, q_idx, kv_idx, lq, lk):
        return self.mask.evaluate(b, h, q_idx + self.q_offset, kv_idx + self.kv_offset, self.lq_total, self.lk_total)

    def __repr__(self):
        return f"offset({self.mask!r}, q+{self.q_offset}, kv+{self.kv_offset})"


def offset(mask: Mask | None, q_offset: int, kv_offset: int, lq_total: int, lk_total: int) -> Mask | None:
    """Restrict ``mask`` of a global ``lq_total x lk_total`` problem to the block whose first query is
    ``q_offset`` and first key is ``kv_offset`` (split-KV, KV-cache chunks and ring attention use
    global positions through this)."""
    if mask is None:
        return None
    return _Offset(as_mask(mask), q_offset, kv_offset, lq_total, lk_total)


def as_mask(mask) -> Mask | None:
    """Accept ``None``, a :class:`Mask` or a bool tensor; anything else is a clear error."""
    if mask is None or isinstance(mask, Mask):
        return mask
    if isinstance(mask, Tensor):
        return _TensorMask(mask)
    raise ValueError(f"mask must be a qkv.masks.Mask, a bool tensor broadcastable to (B, H, Lq, Lk) or None, "
                     f"got {type(mask).__name__}; build one with qkv.masks.causal() / from_function(fn)")
