"""Per-group work of the tiled engine: gather a group's segments, compute them, scatter the results.

A group's ``n`` segments go into the batch dim: rows ``(B * n, H, tq, D)``, keys ``(B * n, Hkv, tk, D)``.
Two executors compute a batch of segments:

* **fused** -- PyTorch's fused CPU flash kernel through :mod:`.fused_op` (returns the log-sum-exp) and
  its backward; masks and additive score mods enter as an additive float mask (``0`` / :func:`neg`);
* **torch** -- plain PyTorch ops on the segment (any score mod, ``Dv != D``, gradients of mod tensors).

Shape legend: ``B`` batch, ``H``/``Hq`` query heads, ``Hkv`` key/value heads, ``n`` segments,
``tq``/``tk`` rows/keys per segment, ``D``/``Dv`` head dims.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor
from torch.types import Device

from ... import mask_base as _masks
from ... import mods as _mods
from ...lse import stable_exp
from . import fused_op
from .plan import CAUSAL_SEG, FULL_SEG, Group

#: broadcastable global index tensors ``(b, h, q_idx, kv_idx)`` of a batch of segments
Index = tuple[Tensor, Tensor, Tensor, Tensor]

__all__ = [
    "neg",
    "Rows",
    "arithmetic",
    "Master",
    "segment_mask",
    "additive_mask",
    "fused_forward",
    "fused_backward",
    "torch_forward",
    "torch_backward",
    "sanitize",
]


def neg(dtype: torch.dtype) -> float:
    """ "Minus infinity" of additive masks in ``dtype``: finite, so that a row masked out of one segment never
    produces ``inf - inf`` in the fused backward, and a quarter of the dtype's range below zero, so that a
    masked pair stays masked (``exp(NEG + s - lse) == 0``) for every scaled score ``|s| < finfo.max / 8``
    (fp32: 4e37) -- at any finite scale where the scores themselves do not overflow."""
    return -torch.finfo(dtype).max / 4


def arithmetic(starts: np.ndarray) -> bool:
    """True when ``starts`` is an arithmetic progression with a step >= 0 (segments are then strided views)."""
    if len(starts) < 2:
        return True
    d = np.diff(starts)
    return bool(d[0] >= 0 and (d == d[0]).all())


class Rows:
    """Segments ``starts[s] + (0..t)`` along dim 2 of ``(B, H, L, ...)`` tensors, as ``(B * n, H, t, ...)``.

    Uses views (slices, ``as_strided``) when the starts form an arithmetic progression, else index
    gathers; ``add_``/``put_`` write back (overlapping segments accumulate correctly).
    """

    def __init__(self, starts: np.ndarray, t: int):
        self.starts, self.t, self.n = starts, t, len(starts)
        steps = np.diff(starts)
        self.step = int(steps[0]) if self.n > 1 and (steps == steps[0]).all() and steps[0] > 0 else None
        self._idx: Tensor | None = None

    def view(self, x: Tensor, b: int) -> Tensor:
        """``(n, H, t, D)`` strided view of ``x[b]`` ``(B, H, L, D)`` (no copy; needs arithmetic starts,
        see :func:`arithmetic`; overlapping segments are fine for reading)."""
        sB, sH, sL, sD = x.stride()
        step = int(self.starts[1] - self.starts[0]) if self.n > 1 else 0
        return x.as_strided(
            (self.n, x.shape[1], self.t, x.shape[3]),
            (step * sL, sH, sL, sD),
            x.storage_offset() + b * sB + int(self.starts[0]) * sL,
        )

    def view_add_(self, dst: Tensor, b: int, src: Tensor) -> None:
        """``dst[b][rows] += src`` for ``src`` ``(n, H, t, D)`` with arithmetic starts: one strided add when
        segments do not overlap, ``t / step`` strided adds when the step divides ``t``, else an index add."""
        step = int(self.starts[1] - self.starts[0]) if self.n > 1 else self.t
        if step >= self.t:
            self.view(dst, b).add_(src)
        elif step == 0:
            Rows(self.starts[:1], self.t).view(dst, b).add_(src.sum(0, keepdim=True))
        elif self.t % step == 0:
            for j in range(0, self.t, step):
                Rows(self.starts + j, step).view(dst, b).add_(src[:, :, j : j + step])
        else:
            _, H, _, D = dst.shape
            dst[b].index_add_(1, self.idx(dst.device), src.permute(1, 0, 2, 3).reshape(H, self.n * self.t, D))

    def idx(self, device: Device) -> Tensor:
        if self._idx is None or self._idx.device != device:
            s = torch.as_tensor(self.starts, device=device).view(-1, 1)
            self._idx = (s + torch.arange(self.t, device=device)).view(-1)  # (n * t,)
        return self._idx

    def _view5(self, x: Tensor) -> Tensor | None:
        """``(B, H, n, t, D)`` view of ``x`` ``(B, H, L, D)``, or None when not expressible."""
        if self.n == 1:
            s = int(self.starts[0])
            return x[:, :, s : s + self.t].unsqueeze(2)
        if self.step is None:
            return None
        sB, sH, sL, sD = x.stride()
        return x.as_strided(
            (x.shape[0], x.shape[1], self.n, self.t, x.shape[3]),
            (sB, sH, self.step * sL, sL, sD),
            x.storage_offset() + int(self.starts[0]) * sL,
        )

    def get(self, x: Tensor) -> Tensor:
        """``x`` ``(B, H, L, D)`` -> ``(B * n, H, t, D)`` (a view when possible)."""
        B, H, _, D = x.shape
        v = self._view5(x)
        if v is None:
            v = x.index_select(2, self.idx(x.device)).view(B, H, self.n, self.t, D)
        return v.permute(0, 2, 1, 3, 4).reshape(B * self.n, H, self.t, D)

    def _back(self, src: Tensor, B: int) -> Tensor:
        _, H, t, D = src.shape
        return src.view(B, self.n, H, t, D).permute(0, 2, 1, 3, 4)  # (B, H, n, t, D)

    def add_(self, dst: Tensor, src: Tensor) -> None:
        """``dst[rows] += src`` for ``src`` ``(B * n, H, t, D)`` (overlaps accumulate)."""
        s5 = self._back(src, dst.shape[0])
        v = self._view5(dst) if self.n == 1 or (self.step is not None and self.step >= self.t) else None
        if v is not None:
            v.add_(s5)
        else:
            B, H, _, D = dst.shape
            dst.index_add_(2, self.idx(dst.device), s5.reshape(B, H, self.n * self.t, D))

    def put_(self, dst: Tensor, src: Tensor) -> None:
        """``dst[rows] = src`` (segments must not overlap)."""
        s5 = self._back(src, dst.shape[0])
        v = self._view5(dst)
        if v is not None:
            v.copy_(s5)
        else:
            B, H, _, D = dst.shape
            dst.index_copy_(2, self.idx(dst.device), s5.reshape(B, H, self.n * self.t, D))


def _indices(group: Group, sl: slice, B: int, H: int, device: Device) -> Index:
    """Broadcastable global index tensors b ``(B,1,1,1,1)``, h ``(1,1,H,1,1)``,
    q ``(1,n,1,tq,1)``, kv ``(1,n,1,1,tk)`` for the segments ``sl`` of ``group``."""
    qs = torch.as_tensor(group.q_starts[sl], device=device).view(1, -1, 1, 1, 1)
    ks = torch.as_tensor(group.k_starts[sl], device=device).view(1, -1, 1, 1, 1)
    b = torch.arange(B, device=device).view(B, 1, 1, 1, 1)
    h = torch.arange(H, device=device).view(1, 1, H, 1, 1)
    q = qs + torch.arange(group.tq, device=device).view(1, 1, 1, -1, 1)
    kv = ks + torch.arange(group.tk, device=device).view(1, 1, 1, 1, -1)
    return b, h, q, kv


def _flat(x: Tensor, B: int, n: int) -> Tensor:
    """``(B|1, n|1, H|1, tq, tk)`` -> ``(B * n, H|1, tq, tk)`` (``(1, H|1, ...)`` if shared by all)."""
    if x.shape[0] == 1 and x.shape[1] == 1:
        return x[0]
    x = x.expand(B, n, *x.shape[2:])
    return x.reshape(B * n, *x.shape[2:])


class Master:
    """One additive pattern ``(1, H|1, T, W)`` from which every segment's mask is a view.

    For a translation-invariant mask and score mod (causal, sliding windows, ALiBi) the value at
    ``(q, kv)`` depends on ``kv - q`` only, so ``M[h, r, j]`` = value at ``(q = r, kv = j - S)``
    and segment ``(q0, k0)`` reads columns ``S + k0 - q0 ...`` -- no mask work per segment.
    """

    def __init__(
        self,
        mask: _masks.Mask | None,
        mod: _mods.ScoreMod | None,
        groups: Sequence[Group],
        Hq: int,
        lq: int,
        lk: int,
        dtype: torch.dtype,
        device: Device,
    ):
        T = max(g.tq for g in groups)
        lo = min(int((g.k_starts - g.q_starts).min()) for g in groups)
        hi = max(int((g.k_starts - g.q_starts).max()) + g.tk for g in groups)
        self.S, W = -lo, hi - lo
        # M[h, r, j] = g[h, j - r + T - 1] with g over every diagonal offset kv - q it needs
        L = W + T - 1
        kv = (torch.arange(L, device=device) - (self.S + T - 1)).view(1, 1, 1, L)
        q = torch.zeros(1, 1, 1, 1, dtype=torch.long, device=device)
        H = Hq if mod is not None else 1
        h = torch.arange(H, device=device).view(1, H, 1, 1)
        g = torch.zeros((), dtype=dtype, device=device).expand(1, H, 1, L)
        if mod is not None:
            g = _mods.apply(mod, g, q, h, q, kv, lq, lk).clamp(min=neg(dtype))
        if mask is not None:
            g = g.masked_fill(~mask.evaluate(q, h, q, kv, lq, lk), neg(dtype))
        self.T = T
        ok = (g[0, :, 0] > neg(dtype) / 2).long().cpu()  # (H, L): may this diagonal offset attend?
        self._ok_cs = torch.nn.functional.pad(ok.cumsum(-1), (1, 0))  # (H, L + 1) prefix sums
        rev = torch.arange(T - 1, -1, -1, device=device)
        self.m = g[:, :, 0].unfold(-1, W, 1).index_select(2, rev)  # (1, H, T, W), one copy

    @staticmethod
    def nbytes(groups: Sequence[Group], Hq: int, esz: int) -> int:
        T = max(g.tq for g in groups)
        lo = min(int((g.k_starts - g.q_starts).min()) for g in groups)
        hi = max(int((g.k_starts - g.q_starts).max()) + g.tk for g in groups)
        return int(Hq * T * (hi - lo) * esz)

    def view(self, group: Group) -> Tensor:
        """``(1, H|1, tq, tk)`` additive mask of a shared group's segments."""
        j = self.S + int(group.k_starts[0] - group.q_starts[0])
        return self.m[:, :, : group.tq, j : j + group.tk]

    def no_empty_rows(self, group: Group) -> bool:
        """True when every row of the group's segments may attend some key: row ``r`` reads
        ``g[j + T - 1 - r ...][:tk]``, so a prefix sum of "allowed" over ``g`` answers it in O(tq)."""
        j = self.S + int(group.k_starts[0] - group.q_starts[0])
        start = j + self.T - 1 - torch.arange(group.tq)
        counts = self._ok_cs[:, start + group.tk] - self._ok_cs[:, start]  # (H, tq)
        return bool((counts > 0).all())


def segment_mask(
    mask: _masks.Mask | None, group: Group, sl: slice, B: int, Hq: int, lq: int, lk: int, device: Device
) -> Tensor | None:
    """Bool ``(B * n | 1, H | 1, tq, tk)``: which pairs of the segments may attend (None = all)."""
    if group.kind == FULL_SEG or mask is None:
        return None
    n = len(range(*sl.indices(group.n)))
    if group.kind == CAUSAL_SEG:
        i = torch.arange(group.tq, device=device).view(-1, 1)
        return (torch.arange(group.tk, device=device).view(1, -1) <= i).view(1, 1, group.tq, group.tk)
    Bm = B if mask.batch_size is not None else 1
    Hm = Hq if mask.num_heads is not None else 1
    if group.shared:  # one pattern for every segment of the group
        sl, n = slice(sl.start, sl.start + 1), 1
    b, h, q, kv = _indices(group, sl, Bm, Hm, device)
    allowed = mask.evaluate(b, h, q, kv, lq, lk)
    allowed = allowed.expand(torch.broadcast_shapes(allowed.shape, (1, n, 1, group.tq, group.tk)))
    return _flat(allowed, B, n) if not group.shared else allowed.reshape(allowed.shape[0] * n, *allowed.shape[2:])


def additive_mask(
    allowed: Tensor | None,
    mod: _mods.ScoreMod | None,
    group: Group,
    sl: slice,
    B: int,
    Hq: int,
    lq: int,
    lk: int,
    dtype: torch.dtype,
    device: Device,
) -> Tensor | None:
    """Float mask for the fused kernel: the additive score mod's bias, :func:`neg` where masked."""
    bias = None
    if mod is not None:
        n = len(range(*sl.indices(group.n)))
        b, h, q, kv = _indices(group, sl, B, Hq, device)
        zero = torch.zeros((), dtype=dtype, device=device).expand(B, n, Hq, group.tq, group.tk)
        bias = _flat(_mods.apply(mod, zero, b, h, q, kv, lq, lk).clamp(min=neg(dtype)), B, n)
    if allowed is None:
        return bias
    if bias is None:
        return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(~allowed, neg(dtype))
    return bias.masked_fill(~allowed, neg(dtype))


def sanitize(qg: Tensor, kg: Tensor, vg: Tensor, allowed: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """Zero the query rows and key/value columns that nothing in the segment attends to, so that
    NaN/inf in masked-out padding never reaches an output or a gradient (``0 * nan = nan``)."""
    if allowed is None:
        return qg, kg, vg
    row_ok = allowed.any(-1, keepdim=True)  # (Bn|1, H|1, tq, 1)
    col_ok = allowed.any(-2)  # (Bn|1, H|1, tk)
    Hkv = kg.shape[1]
    if col_ok.shape[1] > 1 and col_ok.shape[1] != Hkv:  # per-query-head mask: a kv head serves G heads
        col_ok = col_ok.view(col_ok.shape[0], Hkv, -1, col_ok.shape[-1]).any(2)
    col_ok = col_ok.unsqueeze(-1)
    if not bool(row_ok.all()):
        qg = torch.where(row_ok, qg, 0.0)
    if not bool(col_ok.all()):
        kg = torch.where(col_ok, kg, 0.0)
        vg = torch.where(col_ok, vg, 0.0)
    return qg, kg, vg


def _empty_rows(lse: Tensor, allowed: Tensor | bool | None) -> Tensor:
    """Rows with nothing to attend in the segment: masked everywhere, or a bias of -inf everywhere."""
    empty = lse < neg(lse.dtype) / 2
    if isinstance(allowed, Tensor):
        empty = empty | ~allowed.any(-1)
    return empty


def fused_forward(
    qg: Tensor,
    kg: Tensor,
    vg: Tensor,
    add_mask: Tensor | None,
    allowed: Tensor | bool | None,
    causal: bool,
    scale: float,
) -> tuple[Tensor, Tensor]:
    """``(out (Bn, Hq, tq, D), lse (Bn, Hq, tq))`` of a segment batch with the fused CPU kernel."""
    out, lse = fused_op.forward(qg, kg, vg, add_mask, causal, scale)
    if add_mask is not None and allowed is not None:  # None: the caller knows no row can be empty
        empty = _empty_rows(lse, allowed)
        if bool(empty.any()):
            lse = lse.masked_fill(empty, float("-inf"))
            out = out.masked_fill(empty.unsqueeze(-1), 0.0)
    return out, lse


def fused_backward(
    dog: Tensor,
    qg: Tensor,
    kg: Tensor,
    vg: Tensor,
    og: Tensor,
    lse_g: Tensor,
    add_mask: Tensor | None,
    causal: bool,
    scale: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """``(dq, dk, dv)`` of a segment batch from the global ``out``/``lse`` rows (FlashAttention-2
    backward: the segment's probabilities are recomputed as ``exp(s - lse)``)."""
    lse_g = lse_g.masked_fill(torch.isinf(lse_g), 0.0)  # empty rows: every score is neg() -> P = 0
    return fused_op.backward(dog, qg, kg, vg, og, lse_g, add_mask, causal, scale)


def _scores(qg: Tensor, kg: Tensor, scale: float) -> Tensor:
    """``(q * scale) @ k^T`` ``(Bn, Hq, tq, tk)`` (scaling q is D/tk times cheaper than scaling the
    scores); the G query heads of a group share their K."""
    Bn, Hq, tq, D = qg.shape
    Hkv, tk = kg.shape[1], kg.shape[2]
    s = torch.matmul(qg.reshape(Bn, Hkv, (Hq // Hkv) * tq, D) * scale, kg.transpose(-1, -2))  # (Bn, Hkv, G*tq, tk)
    return s.view(Bn, Hq, tq, tk)


def _modify(s: Tensor, mod: _mods.ScoreMod | None, idx: Index | None, B: int, lq: int, lk: int) -> Tensor:
    if mod is None:
        return s
    assert idx is not None, "a score mod needs the segments' index tensors"
    Bn, Hq, tq, tk = s.shape
    z = _mods.apply(mod, s.view(B, Bn // B, Hq, tq, tk), *idx, lq, lk)
    return z.reshape(Bn, Hq, tq, tk)


def _weigh(p: Tensor, vg: Tensor) -> Tensor:
    """``p @ v`` ``(Bn, Hq, tq, Dv)`` with shared values per kv head."""
    Bn, Hq, tq, tk = p.shape
    Hkv, Dv = vg.shape[1], vg.shape[3]
    return torch.matmul(p.reshape(Bn, Hkv, (Hq // Hkv) * tq, tk), vg).view(Bn, Hq, tq, Dv)


def torch_forward(
    qg: Tensor,
    kg: Tensor,
    vg: Tensor,
    allowed: Tensor | None,
    mod: _mods.ScoreMod | None,
    idx: Index | None,
    B: int,
    scale: float,
    lq: int,
    lk: int,
) -> tuple[Tensor, Tensor]:
    """``(out, lse)`` of a segment batch with plain PyTorch ops (any score mod)."""
    s = _scores(qg, kg, scale)
    z = _modify(s, mod, idx, B, lq, lk)
    own = z is s  # our fresh tensor: overwrite it in place (a mod's result might be the caller's)
    if allowed is not None:
        z = z.masked_fill_(~allowed, float("-inf")) if own else z.masked_fill(~allowed, float("-inf"))
        own = True
    p, total, lse = stable_exp(z, inplace=own)
    return _weigh(p, vg) / total, lse


def torch_backward(
    dog: Tensor,
    qg: Tensor,
    kg: Tensor,
    vg: Tensor,
    lse_g: Tensor,
    delta_g: Tensor,
    allowed: Tensor | None,
    mod: _mods.ScoreMod | None,
    idx: Index | None,
    B: int,
    scale: float,
    lq: int,
    lk: int,
    mod_tensors: Sequence[Tensor],
) -> tuple[Tensor, Tensor, Tensor, list[Tensor | None]]:
    """``(dq, dk, dv, [d mod_tensor])`` of a segment batch; ``delta = rowsum(dO * O) - dlse``."""
    s = _scores(qg, kg, scale)
    with torch.enable_grad():
        if mod is not None:
            s.requires_grad_(True)
        z = _modify(s, mod, idx, B, lq, lk)
    zd = z.detach()
    if allowed is not None:
        zd = zd.masked_fill(~allowed, float("-inf"))
    p = torch.exp(zd - lse_g.masked_fill(torch.isinf(lse_g), float("inf")).unsqueeze(-1))  # (Bn, Hq, tq, tk)
    Bn, Hq, tq, tk = p.shape
    Hkv = kg.shape[1]
    G = Hq // Hkv
    dog3 = dog.reshape(Bn, Hkv, G * tq, dog.shape[-1])
    p3 = p.view(Bn, Hkv, G * tq, tk)
    dv = torch.matmul(p3.transpose(-1, -2), dog3)  # (Bn, Hkv, tk, Dv)
    dp = torch.matmul(dog3, vg.transpose(-1, -2)).view(Bn, Hq, tq, tk)
    dz = p.mul_(dp.sub_(delta_g.unsqueeze(-1)))
    grads_mod: list[Tensor | None] = []
    if mod is not None:
        got = torch.autograd.grad(z, [s, *mod_tensors], dz, allow_unused=True)
        dz, grads_mod = got[0], list(got[1:])
    ds = (dz * scale).view(Bn, Hkv, G * tq, tk)
    dq = torch.matmul(ds, kg).view(Bn, Hq, tq, -1)
    dk = torch.matmul(ds.transpose(-1, -2), qg.reshape(Bn, Hkv, G * tq, -1))
    return dq, dk, dv, grads_mod
