"""``impl="tiled"``: exact attention in O(N) memory, skipping what the mask forbids.

FlashAttention-2 on CPU. The score matrix is cut into tiles; the mask's block map says which
tiles are EMPTY (skipped), FULL (no mask work) or PARTIAL (mask evaluated on the tile only)
(:mod:`qkv.core.engines.tiled.plan`). Each query row's tiles are computed as a few segments whose
partial results ``(out_i, lse_i)`` are combined with :func:`qkv.merge` (the online softmax:
running max, running sum, rescaled accumulator)::

    lse = log(sum_i exp(lse_i))          out = sum_i exp(lse_i - lse) * out_i

A segment runs in PyTorch's fused CPU flash kernel (:mod:`.fused_op`) when it can (no score mod or an
additive one such as ALiBi/bias, ``D == Dv``, the kernel present), else in plain PyTorch tiles (any score
mod, ``Dv != D``, gradients into tensors a score mod uses). Nothing of size ``Lq x Lk`` is ever allocated.
Masks and mods are read only through their public description (band, translation invariance,
additivity, block map, fingerprint, captured tensors).

The backward (a custom :class:`torch.autograd.Function`) saves only ``q, k, v, out, lse`` and
recomputes each segment's probabilities ``P = exp(S - lse)`` (``delta = rowsum(dO * O) - dlse``),
so it is O(N) in memory too; the gradient of ``lse`` is exact (ring attention differentiates
through :func:`qkv.merge`).

Shape legend: q ``(B, Hq, Lq, D)``, k ``(B, Hkv, Lk, D)``, v ``(B, Hkv, Lk, Dv)`` -> out
``(B, Hq, Lq, Dv)``, lse ``(B, Hq, Lq)``.

Example:
    >>> import torch
    >>> from qkv import attention, masks
    >>> q, k, v = (torch.randn(1, 2, 300, 16, dtype=torch.float64) for _ in range(3))
    >>> mask = masks.sliding_window(32)
    >>> out, lse = attention(q, k, v, mask=mask, impl="tiled", return_lse=True)
    >>> ref, ref_lse = attention(q, k, v, mask=mask, impl="reference", return_lse=True)
    >>> bool(torch.allclose(out, ref) and torch.allclose(lse, ref_lse))
    True
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import Tensor

from ... import mods as _mods
from ...inputs import AttentionInputs
from ...lse import lse_dtype
from ...merging import merge
from . import fused_op
from .kernels import (
    Master,
    Rows,
    additive_mask,
    fused_backward,
    fused_forward,
    sanitize,
    segment_mask,
    torch_backward,
    torch_forward,
)
from .kernels import _indices as segment_indices
from .plan import CAUSAL_SEG, Plan, make_plan, translation_invariant

__all__ = ["tiled_forward", "tiled_plan_for", "CHUNK_BYTES"]

#: Memory budget of one batch of segments (gathered keys/values, masks, score tiles).
CHUNK_BYTES = 64 << 20

_CACHE: "OrderedDict[tuple, tuple]" = OrderedDict()  # key -> (mask, mod, plan, master): the last few problems
_CACHE_SIZE = 8
_CACHE_MASTER_BYTES = 64 << 20


@dataclass
class _Problem:
    """Everything the forward and backward share (no tensors of size ``Lq x Lk``)."""

    plan: Plan
    mask: object
    mod: object
    scale: float
    lq: int
    lk: int
    fused: bool
    master: object = None  # a Master (built lazily) when masks/mods come from one shared pattern
    use_master: bool = False


def _fusable(inp: AttentionInputs) -> bool:
    return (inp.q.device.type == "cpu" and inp.D == inp.Dv and _mods.additive(inp.score_mod)
            and not (inp.mod_tensors and inp.needs_grad) and fused_op.unavailable() is None)


def _use_master(inp: AttentionInputs) -> bool:
    return _fusable(inp) and translation_invariant(inp.mask) and _mods.shift_invariant(inp.score_mod)


def tiled_plan_for(inp: AttentionInputs) -> Plan:
    """The plan the tiled engine would run for ``inp`` (for inspection and the benchmark)."""
    fused = _fusable(inp)
    return make_plan(inp.mask, inp.Lq, inp.Lk, fused=fused, heads=inp.B * inp.Hq, kv_heads=inp.B * inp.Hkv,
                     head_dim=inp.D, whole_rows=fused and inp.score_mod is not None, master=_use_master(inp))


def _chunks(group, per_segment_bytes: int):
    step = max(1, CHUNK_BYTES // max(per_segment_bytes, 1))
    for s in range(0, group.n, step):
        yield slice(s, min(s + step, group.n))


def _segment_bytes(p: _Problem, g, B, Hq, Hkv, D, Dv, esz) -> int:
    """Memory one segment of ``g`` needs while its batch runs (gathers, masks, tiles, outputs)."""
    gathered = B * Hkv * g.tk * (D + Dv) + B * Hq * g.tq * (2 * D + 2 * Dv)
    if not p.fused:
        tiles = 4 * B * Hq * g.tq * g.tk  # scores, probabilities and their gradients
    elif p.mod is not None:
        tiles = 2 * B * Hq * g.tq * g.tk  # the bias of an additive score mod
    else:
        tiles = 0 if (g.shared or g.kind != "mask") else 2 * g.tq * g.tk  # bool + additive mask
    return (gathered + tiles) * esz


def _segments(p: _Problem, q, k, v):
    """Yield ``(group, rows, keys, qg, kg, vg, allowed, add_mask, idx)`` for every segment batch."""
    B, Hq = q.shape[:2]
    esz = q.element_size()
    masked = [g for g in p.plan.groups if g.kind == "mask" or (g.kind == "full" and p.mod is not None)]
    if p.use_master and masked and p.master is None and Master.nbytes(masked, Hq, esz) <= 8 * CHUNK_BYTES:
        p.master = Master(p.mask, p.mod, masked, Hq, p.lq, p.lk, q.dtype, q.device)
        _remember_master(p)
    for g in p.plan.groups:
        if p.master is not None and any(g is m for m in masked):  # translation-invariant: a view of the shared pattern
            add = p.master.view(g)
            allowed = None if p.master.no_empty_rows(g) else True  # True: look for empty rows in the result
            views = g.n == 1 or Rows(g.q_starts, g.tq).step and Rows(g.k_starts, g.tk).step  # nothing gathered
            per = B * Hq * g.tq * 2 * v.shape[3] * esz if views else \
                _segment_bytes(p, g, B, Hq, k.shape[1], q.shape[3], v.shape[3], esz)
            for sl in _chunks(g, per):
                r, c = Rows(g.q_starts[sl], g.tq), Rows(g.k_starts[sl], g.tk)
                yield g, r, c, r.get(q), c.get(k), c.get(v), allowed, add, None
            continue
        per = _segment_bytes(p, g, B, Hq, k.shape[1], q.shape[3], v.shape[3], esz)
        for sl in _chunks(g, per):
            r, c = Rows(g.q_starts[sl], g.tq), Rows(g.k_starts[sl], g.tk)
            qg, kg, vg = r.get(q), c.get(k), c.get(v)
            allowed = None
            if g.kind != "full" and not (p.fused and g.kind == CAUSAL_SEG and p.mod is None):
                allowed = segment_mask(p.mask, g, sl, B, Hq, p.lq, p.lk, q.device)
            qg, kg, vg = sanitize(qg, kg, vg, allowed)
            add = idx = None
            if p.fused:
                add = additive_mask(allowed, p.mod, g, sl, B, Hq, p.lq, p.lk, q.dtype, q.device)
                if allowed is None and add is not None:
                    allowed = True  # a bias of -inf may empty a row: look at the result
            elif p.mod is not None:
                idx = segment_indices(g, sl, B, Hq, q.device)
            yield g, r, c, qg, kg, vg, allowed, add, idx


def _forward(p: _Problem, q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    B, Hq, Lq, _ = q.shape
    Dv = v.shape[3]
    groups = p.plan.groups
    if len(groups) == 1 and groups[0].n == 1 and groups[0].tq == Lq and p.fused:  # one call covers it all
        g = groups[0]
        for _, _, _, qg, kg, vg, allowed, add, _ in _segments(p, q, k, v):
            return fused_forward(qg, kg, vg, add, allowed, g.kind == CAUSAL_SEG and p.mod is None, p.scale)
    # Rows start empty (out 0, lse -inf: neutral in a merge): a batch of segments may hold rows that earlier
    # groups covered beside rows seen for the first time, and merges the whole batch.
    out = torch.zeros(B, Hq, Lq, Dv, dtype=q.dtype, device=q.device)
    lse = torch.full((B, Hq, Lq), float("-inf"), dtype=lse_dtype(q.dtype), device=q.device)
    lse4 = lse.unsqueeze(-1)  # (B, Hq, Lq, 1) view: Rows works on 4-D tensors
    covered = torch.zeros(Lq, dtype=torch.bool)  # rows that already hold a partial result
    for g, r, _, qg, kg, vg, allowed, add, idx in _segments(p, q, k, v):
        if p.fused:
            o, l = fused_forward(qg, kg, vg, add, allowed, g.kind == CAUSAL_SEG and p.mod is None, p.scale)
        else:
            o, l = torch_forward(qg, kg, vg, allowed, p.mod, idx, B, p.scale, p.lq, p.lk)
        rows = r.idx(torch.device("cpu"))
        if bool(covered[rows].any()):  # online softmax: rescale and combine with what is there
            o, l = merge([(r.get(out), r.get(lse4).squeeze(-1)), (o, l)])
        covered[rows] = True
        r.put_(out, o)
        r.put_(lse4, l.unsqueeze(-1))
    return out, lse


def _backward(p: _Problem, q, k, v, out, lse, dout, dlse, mod_tensors):
    dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
    dmods = [torch.zeros_like(t) for t in mod_tensors]
    dlse = None if dlse is None else torch.where(torch.isfinite(lse), dlse, 0.0)
    has_dlse = dlse is not None and bool((dlse != 0).any())
    if p.fused and has_dlse:
        # The fused kernel computes delta = rowsum(dO * O) itself; add dlse through an extra value
        # column of ones (dP gains dlse) whose output column is 0 (delta unchanged).
        q, k = (torch.nn.functional.pad(t, (0, 1)) for t in (q, k))
        v = torch.nn.functional.pad(v, (0, 1), value=1.0)
        out = torch.nn.functional.pad(out, (0, 1))
        dout = torch.cat([dout, dlse.unsqueeze(-1).to(dout.dtype)], dim=-1)
        dq, dk, dv = (torch.nn.functional.pad(t, (0, 1)) for t in (dq, dk, dv))
    delta = None
    if not p.fused:
        delta = (dout * out).sum(-1)
        if has_dlse:
            delta = delta - dlse
    lse4 = lse.unsqueeze(-1)
    for g, r, c, qg, kg, vg, allowed, add, idx in _segments(p, q, k, v):
        dog, og, lg = r.get(dout), r.get(out), r.get(lse4).squeeze(-1)
        if p.fused:
            gq, gk, gv = fused_backward(dog, qg, kg, vg, og, lg, add, g.kind == CAUSAL_SEG and p.mod is None,
                                        p.scale)
        else:
            dg = r.get(delta.unsqueeze(-1)).squeeze(-1)
            gq, gk, gv, gm = torch_backward(dog, qg, kg, vg, lg, dg, allowed, p.mod, idx, q.shape[0], p.scale,
                                            p.lq, p.lk, mod_tensors)
            for acc, gr in zip(dmods, gm):
                if gr is not None:
                    acc += gr
        r.add_(dq, gq)
        c.add_(dk, gk)
        c.add_(dv, gv)
    if p.fused and has_dlse:
        dq, dk, dv = dq[..., :-1], dk[..., :-1], dv[..., :-1]
    return dq, dk, dv, dmods


class _TiledAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, p: _Problem, q, k, v, *mod_tensors):
        out, lse = _forward(p, q, k, v)
        ctx.p = p
        ctx.save_for_backward(q, k, v, out, lse, *mod_tensors)
        return out, lse

    @staticmethod
    def backward(ctx, dout, dlse):
        q, k, v, out, lse, *mod_tensors = ctx.saved_tensors
        if dout is None:
            dout = torch.zeros_like(out)
        dq, dk, dv, dmods = _backward(ctx.p, q, k, v, out, lse, dout.contiguous(), dlse, mod_tensors)
        return (None, dq, dk, dv, *dmods)


def _problem(inp: AttentionInputs) -> _Problem:
    """The plan (and shared pattern) for ``inp``, reused from the last calls with the same mask/mod objects."""
    fused = _fusable(inp)
    fm = None if inp.mask is None else inp.mask.fingerprint()
    fmod = None if inp.score_mod is None else inp.score_mod.fingerprint()
    key = None
    cacheable = (fm is not None or inp.mask is None) and (fmod is not None or inp.score_mod is None)
    if cacheable and not inp.mod_tensors:  # never pin a tensor that carries a graph
        key = (fm, fmod, inp.B, inp.Hq, inp.Hkv, inp.Lq, inp.Lk, inp.D, inp.Dv, inp.compute_dtype, inp.q.device.type)
        hit = _CACHE.get(key)
        if hit is not None:
            _CACHE.move_to_end(key)
            plan, master = hit[2], hit[3]
            return _Problem(plan, inp.mask, inp.score_mod, inp.scale, inp.Lq, inp.Lk, fused, master=master,
                            use_master=_use_master(inp))
    p = _Problem(tiled_plan_for(inp), inp.mask, inp.score_mod, inp.scale, inp.Lq, inp.Lk, fused,
                 use_master=_use_master(inp))
    if key is not None:
        _CACHE[key] = (inp.mask, inp.score_mod, p.plan, None)
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return p


def _remember_master(p: _Problem) -> None:
    """Keep a freshly built shared pattern with its cached plan (small ones only, at most
    ``2 * _CACHE_MASTER_BYTES`` pinned in all: the oldest patterns are dropped first)."""
    size = p.master.m.numel() * p.master.m.element_size()
    if size > _CACHE_MASTER_BYTES:
        return
    for key, (mask, mod, plan, master) in _CACHE.items():
        if plan is p.plan and master is None:
            _CACHE[key] = (mask, mod, plan, p.master)
            break
    pinned = 0
    for key in reversed(list(_CACHE)):
        mask, mod, plan, master = _CACHE[key]
        if master is not None:
            pinned += master.m.numel() * master.m.element_size()
            if pinned > 2 * _CACHE_MASTER_BYTES:
                _CACHE[key] = (mask, mod, plan, None)


def tiled_forward(inp: AttentionInputs) -> tuple[Tensor, Tensor]:
    """``(out, lse)`` of validated inputs; differentiable w.r.t. q, k, v and score-mod tensors."""
    cd = inp.compute_dtype
    q, k, v = inp.q.to(cd), inp.k.to(cd), inp.v.to(cd)
    p = _problem(inp)
    if inp.needs_grad:
        mod_tensors = [] if p.fused else list(inp.mod_tensors)
        out, lse = _TiledAttention.apply(p, q, k, v, *mod_tensors)
    else:
        out, lse = _forward(p, q, k, v)
    return out.to(inp.dtype), lse
