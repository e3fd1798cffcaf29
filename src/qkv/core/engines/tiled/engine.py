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
from typing import Any, Iterator, Sequence

import torch
from torch import Tensor

from ... import mask_base as _masks
from ... import mods as _mods
from ...inputs import AttentionInputs
from ...lse import lse_dtype
from ...merging import merge
from . import fused_op
from .kernels import (
    Index,
    Master,
    Rows,
    additive_mask,
    arithmetic,
    fused_backward,
    fused_forward,
    sanitize,
    segment_mask,
    torch_backward,
    torch_forward,
)
from .kernels import _indices as segment_indices
from .plan import CAUSAL_SEG, Group, Plan, make_plan, translation_invariant

__all__ = ["tiled_forward", "tiled_plan_for", "CHUNK_BYTES"]

import numpy as np  # noqa: E402

#: Memory budget of one batch of segments (gathered keys/values, masks, score tiles).
CHUNK_BYTES = 64 << 20

_CACHE: "OrderedDict[tuple[object, ...], list[Any]]" = (
    OrderedDict()
)  # key -> [mask, mod, plan, master, schedule]: the last few problems
_CACHE_SIZE = 8
_CACHE_MASTER_BYTES = 64 << 20


@dataclass
class _Problem:
    """Everything the forward and backward share (no tensors of size ``Lq x Lk``)."""

    plan: Plan
    mask: _masks.Mask | None
    mod: _mods.ScoreMod | None
    scale: float
    lq: int
    lk: int
    fused: bool
    master: Master | None = None  # a Master (built lazily) when masks/mods come from one shared pattern
    use_master: bool = False
    schedule: _Schedule | None = None  # the fused path's _Schedule (built once per cached plan)
    # unit index -> (allowed, add): the forward's masks, reused by the backward
    saved: dict[int, tuple[Tensor | bool | None, Tensor | None]] | None = None

    def fused_schedule(self) -> _Schedule:
        """The fused path's schedule (:func:`_problem` builds one for every fused problem)."""
        assert self.schedule is not None, "a fused problem always has a schedule"
        return self.schedule


def _grad(inp: AttentionInputs, needs_grad: bool | None) -> bool:
    """Whether the inputs need gradients: ``needs_grad`` when given (inside a registered op, where the
    tensors never require grad), else read from the inputs."""
    return inp.needs_grad if needs_grad is None else needs_grad


def _fusable(inp: AttentionInputs, needs_grad: bool | None = None) -> bool:
    return (
        inp.device_type == "cpu"
        and inp.D == inp.Dv
        and _mods.additive(inp.score_mod)
        and not (inp.mod_tensors and _grad(inp, needs_grad))
        and fused_op.unavailable() is None
    )


def _use_master(inp: AttentionInputs, needs_grad: bool | None = None) -> bool:
    return _fusable(inp, needs_grad) and translation_invariant(inp.mask) and _mods.shift_invariant(inp.score_mod)


def tiled_plan_for(inp: AttentionInputs, needs_grad: bool | None = None) -> Plan:
    """The plan the tiled engine would run for ``inp`` (for inspection and the benchmark); ``needs_grad``
    overrides what the inputs say (the registered ops of :mod:`.ops` pass it)."""
    fused = _fusable(inp, needs_grad)
    return make_plan(
        inp.mask,
        inp.Lq,
        inp.Lk,
        fused=fused,
        heads=inp.B * inp.Hq,
        kv_heads=inp.B * inp.Hkv,
        head_dim=inp.D,
        whole_rows=fused and inp.score_mod is not None,
        master=_use_master(inp, needs_grad),
        backward=fused and _grad(inp, needs_grad),
    )


def _chunks(group: Group, per_segment_bytes: int) -> Iterator[slice]:
    step = max(1, CHUNK_BYTES // max(per_segment_bytes, 1))
    for s in range(0, group.n, step):
        yield slice(s, min(s + step, group.n))


def _segment_bytes(g: Group, B: int, Hq: int, Hkv: int, D: int, Dv: int, esz: int) -> int:
    """Memory one segment of ``g`` needs while its batch of PyTorch tiles runs (gathers, tiles, outputs)."""
    gathered = B * Hkv * g.tk * (D + Dv) + B * Hq * g.tq * (2 * D + 2 * Dv)
    tiles = 4 * B * Hq * g.tq * g.tk  # scores, probabilities and their gradients
    return (gathered + tiles) * esz


def _segments(
    p: _Problem, q: Tensor, k: Tensor, v: Tensor
) -> Iterator[tuple[Group, Rows, Rows, Tensor, Tensor, Tensor, Tensor | None, Index | None]]:
    """PyTorch tiles: yield ``(group, rows, keys, qg, kg, vg, allowed, idx)`` for every segment batch."""
    B, Hq = q.shape[:2]
    for g in p.plan.groups:
        per = _segment_bytes(g, B, Hq, k.shape[1], q.shape[3], v.shape[3], q.element_size())
        for sl in _chunks(g, per):
            r, c = Rows(g.q_starts[sl], g.tq), Rows(g.k_starts[sl], g.tk)
            allowed = None if g.kind == "full" else segment_mask(p.mask, g, sl, B, Hq, p.lq, p.lk, q.device)
            qg, kg, vg = sanitize(r.get(q), c.get(k), c.get(v), allowed)
            idx = None if p.mod is None else segment_indices(g, sl, B, Hq, q.device)
            yield g, r, c, qg, kg, vg, allowed, idx


#: Cost of one extra kernel call against one byte gathered (measured on this machine kind, B=1, H=8, D=64:
#: a call ~0.1 ms, a gather ~3-5 GB/s under load): irregular groups are split into strided runs when cheaper.
_CALL_BYTES = 400_000


@dataclass
class _Unit:
    """One fused kernel batch: segments ``sl`` of ``group``; ``views``: rows/keys are strided views (no copy);
    ``fresh``: none of its rows holds a partial result yet (write, do not merge)."""

    g: Group
    sl: slice
    rows: Rows
    cols: Rows
    views: bool
    fresh: bool


@dataclass
class _Schedule:
    """The fused path's batches for one plan, computed once: no per-call work proportional to the blocks."""

    units: list[_Unit]
    init_out: bool  # some row is never covered or merged into before it is written: start from (0, -inf)
    rows_once: bool  # every query row is covered by exactly one unit: dq is written, not accumulated
    cols_once: bool  # every key column is read by exactly one segment: dk/dv are written


def _runs(starts_q: np.ndarray, starts_k: np.ndarray) -> list[slice]:
    """Maximal runs of segments whose query and key starts are both arithmetic."""
    runs, a, n = [], 0, len(starts_q)
    while a < n:
        b = min(a + 2, n)
        while (
            b < n
            and starts_q[b] - starts_q[b - 1] == starts_q[a + 1] - starts_q[a]
            and starts_k[b] - starts_k[b - 1] == starts_k[a + 1] - starts_k[a]
        ):
            b += 1
        if b - a == 2 and not (arithmetic(starts_q[a:b]) and arithmetic(starts_k[a:b])):
            b = a + 1
        runs.append(slice(a, b))
        a = b
    return runs


def _schedule(
    plan: Plan, B: int, Hq: int, Hkv: int, D: int, Dv: int, esz: int, lq: int, lk: int, has_mod: bool
) -> _Schedule:
    rows_seen = np.zeros(lq, dtype=np.int32)
    cols_seen = np.zeros(lk, dtype=np.int32)
    units: list[_Unit] = []
    init = False
    for g in plan.groups:
        direct = arithmetic(g.q_starts) and arithmetic(g.k_starts)
        if not direct:  # strided runs, unless there are so many that gathering copies less
            runs = _runs(g.q_starts, g.k_starts)
            gather_bytes = g.n * (B * Hkv * g.tk * (D + Dv) + B * Hq * g.tq * (D + 2 * Dv)) * esz
            direct = len(runs) * _CALL_BYTES <= gather_bytes
        tiles = (2 if has_mod else 0) * Hq * g.tq * g.tk + (0 if g.kind != "mask" or g.shared else 2 * g.tq * g.tk)
        if direct:
            per = (Hq * g.tq * 2 * Dv + tiles) * esz
            spans = (
                _runs(g.q_starts, g.k_starts)
                if not (arithmetic(g.q_starts) and arithmetic(g.k_starts))
                else [slice(0, g.n)]
            )
        else:
            per = (B * Hkv * g.tk * (D + Dv) + B * Hq * g.tq * (2 * D + 2 * Dv) + B * tiles) * esz
            spans = [slice(0, g.n)]
        step = max(1, CHUNK_BYTES // max(per, 1))
        for span in spans:
            for a in range(span.start, span.stop, step):
                sl = slice(a, min(a + step, span.stop))
                rows = (g.q_starts[sl, None] + np.arange(g.tq)).ravel()
                cols = (g.k_starts[sl, None] + np.arange(g.tk)).ravel()
                seen = rows_seen[rows] > 0
                fresh = not seen.any()
                init |= not fresh and not seen.all()
                np.add.at(rows_seen, rows, 1)
                np.add.at(cols_seen, cols, 1)
                views = direct and sl.stop - sl.start > 1  # one segment: plain slices serve every batch element
                units.append(_Unit(g, sl, Rows(g.q_starts[sl], g.tq), Rows(g.k_starts[sl], g.tk), views, fresh))
    init |= bool((rows_seen == 0).any())
    return _Schedule(units, init, bool((rows_seen == 1).all()), bool((cols_seen == 1).all()))


def _batches(
    p: _Problem, q: Tensor, k: Tensor, v: Tensor, forward: bool
) -> Iterator[tuple[int, _Unit, int | None, Tensor, Tensor, Tensor, Tensor | bool | None, Tensor | None]]:
    """Yield ``(i, unit, b, qg, kg, vg, allowed, add)`` for every fused kernel call (``b`` None: gathered over
    the batch dim). The forward's masks are kept for the backward (``p.saved``) when they are small."""
    B, Hq = q.shape[:2]
    esz = q.element_size()
    units = p.fused_schedule().units
    masked = [g for g in p.plan.groups if g.kind == "mask" or (g.kind == "full" and p.mod is not None)]
    if p.use_master and masked and p.master is None and Master.nbytes(masked, Hq, esz) <= 8 * CHUNK_BYTES:
        p.master = Master(p.mask, p.mod, masked, Hq, p.lq, p.lk, q.dtype, q.device)
        _remember_master(p)
    keep = forward and torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v))
    budget = CHUNK_BYTES
    for i, u in enumerate(units):
        g, sl = u.g, u.sl
        allowed: Tensor | bool | None
        add: Tensor | None
        if p.master is not None and g.kind in ("mask", "full") and (g.kind == "mask" or p.mod is not None):
            add = p.master.view(g)
            allowed = None if p.master.no_empty_rows(g) else True  # True: look for empty rows in the result
        elif p.saved is not None and i in p.saved:
            allowed, add = p.saved[i]
        else:
            allowed = None
            if g.kind != "full" and not (g.kind == CAUSAL_SEG and p.mod is None):
                allowed = segment_mask(p.mask, g, sl, B, Hq, p.lq, p.lk, q.device)
            add = additive_mask(allowed, p.mod, g, sl, B, Hq, p.lq, p.lk, q.dtype, q.device)
            if allowed is None and add is not None:
                allowed = True  # a bias of -inf may empty a row: look at the result
            if keep and add is not None:
                size = add.numel() * add.element_size() + (allowed.numel() if isinstance(allowed, Tensor) else 0)
                if size <= budget:
                    budget -= size
                    p.saved = {} if p.saved is None else p.saved
                    p.saved[i] = (allowed, add)
        if not u.views:
            qg, kg, vg = u.rows.get(q), u.cols.get(k), u.cols.get(v)
            qg, kg, vg = sanitize(qg, kg, vg, allowed if isinstance(allowed, Tensor) else None)
            yield i, u, None, qg, kg, vg, allowed, add
            continue
        n = u.rows.n
        for b in range(B):
            al, ad = allowed, add
            if isinstance(al, Tensor) and al.shape[0] == B * n:
                al = al[b * n : (b + 1) * n]
            if isinstance(ad, Tensor) and ad.shape[0] == B * n:
                ad = ad[b * n : (b + 1) * n]
            qg, kg, vg = u.rows.view(q, b), u.cols.view(k, b), u.cols.view(v, b)
            qg, kg, vg = sanitize(qg, kg, vg, al if isinstance(al, Tensor) else None)
            yield i, u, b, qg, kg, vg, al, ad


def _put(r: Rows, dst: Tensor, b: int | None, src: Tensor) -> None:
    if b is None:
        r.put_(dst, src)
    else:
        r.view(dst, b).copy_(src)


def _get(r: Rows, x: Tensor, b: int | None) -> Tensor:
    return r.get(x) if b is None else r.view(x, b)


def _fused_forward(p: _Problem, q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    B, Hq, Lq, _ = q.shape
    Dv = v.shape[3]
    sched = p.fused_schedule()
    if len(sched.units) == 1 and sched.units[0].rows.n == 1 and sched.units[0].g.tq == Lq:  # one call covers it all
        for _, u, _, qg, kg, vg, allowed, add in _batches(p, q, k, v, forward=True):
            return fused_forward(qg, kg, vg, add, allowed, u.g.kind == CAUSAL_SEG and p.mod is None, p.scale)
    # (B, Lq, Hq, Dv) memory like the fused kernel's own output: rows are written as contiguous runs.
    out = (torch.zeros if sched.init_out else torch.empty)(B, Lq, Hq, Dv, dtype=q.dtype, device=q.device)
    out = out.transpose(1, 2)
    lse = torch.empty((B, Lq, Hq), dtype=lse_dtype(q.dtype), device=q.device).transpose(1, 2)  # the kernel's layout
    if sched.init_out:
        lse.fill_(float("-inf"))
    lse4 = lse.unsqueeze(-1)
    for _, u, b, qg, kg, vg, allowed, add in _batches(p, q, k, v, forward=True):
        o, ls = fused_forward(qg, kg, vg, add, allowed, u.g.kind == CAUSAL_SEG and p.mod is None, p.scale)
        if not u.fresh:  # online softmax: rescale and combine with what is there
            if b is None:
                o, ls = merge([(u.rows.get(out), u.rows.get(lse4).squeeze(-1)), (o, ls)])
            else:
                o, ls = merge([(u.rows.view(out, b), u.rows.view(lse4, b).squeeze(-1)), (o, ls)])
        _put(u.rows, out, b, o)
        _put(u.rows, lse4, b, ls.unsqueeze(-1))
    return out, lse


def _fused_backward(
    p: _Problem, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, dout: Tensor, dlse: Tensor | None
) -> tuple[Tensor, Tensor, Tensor, list[Tensor]]:
    sched = p.fused_schedule()
    dlse = None if dlse is None else torch.where(torch.isfinite(lse), dlse, 0.0)
    has_dlse = dlse is not None and bool((dlse != 0).any())
    if dlse is not None and has_dlse:
        # The fused kernel computes delta = rowsum(dO * O) itself; add dlse through an extra value
        # column of ones (dP gains dlse) whose output column is 0 (delta unchanged).
        q, k = (torch.nn.functional.pad(t, (0, 1)) for t in (q, k))
        v = torch.nn.functional.pad(v, (0, 1), value=1.0)
        out = torch.nn.functional.pad(out, (0, 1))
        dout = torch.cat([dout, dlse.unsqueeze(-1).to(dout.dtype)], dim=-1)
    dq = (torch.empty_like if sched.rows_once else torch.zeros_like)(q)
    dk, dv = ((torch.empty_like if sched.cols_once else torch.zeros_like)(t) for t in (k, v))
    lse4 = lse.unsqueeze(-1)
    for _, u, b, qg, kg, vg, allowed, add in _batches(p, q, k, v, forward=False):
        dog, og, lg = _get(u.rows, dout, b), _get(u.rows, out, b), _get(u.rows, lse4, b).squeeze(-1)
        gq, gk, gv = fused_backward(dog, qg, kg, vg, og, lg, add, u.g.kind == CAUSAL_SEG and p.mod is None, p.scale)
        if b is None:
            (u.rows.put_ if sched.rows_once else u.rows.add_)(dq, gq)
            for dst, src in ((dk, gk), (dv, gv)):
                (u.cols.put_ if sched.cols_once else u.cols.add_)(dst, src)
            continue
        if sched.rows_once:
            u.rows.view(dq, b).copy_(gq)
        else:
            u.rows.view_add_(dq, b, gq)
        for dst, src in ((dk, gk), (dv, gv)):
            if sched.cols_once:
                u.cols.view(dst, b).copy_(src)
            else:
                u.cols.view_add_(dst, b, src)
    if has_dlse:
        dq, dk, dv = dq[..., :-1], dk[..., :-1], dv[..., :-1]
    return dq, dk, dv, []


def _forward(p: _Problem, q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    if p.fused:
        return _fused_forward(p, q, k, v)
    B, Hq, Lq, _ = q.shape
    Dv = v.shape[3]
    # Rows start empty (out 0, lse -inf: neutral in a merge): a batch of segments may hold rows that earlier
    # groups covered beside rows seen for the first time, and merges the whole batch.
    out = torch.zeros(B, Hq, Lq, Dv, dtype=q.dtype, device=q.device)
    lse = torch.full((B, Hq, Lq), float("-inf"), dtype=lse_dtype(q.dtype), device=q.device)
    lse4 = lse.unsqueeze(-1)  # (B, Hq, Lq, 1) view: Rows works on 4-D tensors
    covered = torch.zeros(Lq, dtype=torch.bool)  # rows that already hold a partial result
    for _, r, _, qg, kg, vg, allowed, idx in _segments(p, q, k, v):
        o, ls = torch_forward(qg, kg, vg, allowed, p.mod, idx, B, p.scale, p.lq, p.lk)
        rows = r.idx(torch.device("cpu"))
        if bool(covered[rows].any()):  # online softmax: rescale and combine with what is there
            o, ls = merge([(r.get(out), r.get(lse4).squeeze(-1)), (o, ls)])
        covered[rows] = True
        r.put_(out, o)
        r.put_(lse4, ls.unsqueeze(-1))
    return out, lse


def _backward(
    p: _Problem,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    lse: Tensor,
    dout: Tensor,
    dlse: Tensor | None,
    mod_tensors: Sequence[Tensor],
) -> tuple[Tensor, Tensor, Tensor, list[Tensor]]:
    if p.fused:
        return _fused_backward(p, q, k, v, out, lse, dout, dlse)
    dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
    dmods = [torch.zeros_like(t) for t in mod_tensors]
    delta = (dout * out).sum(-1)
    if dlse is not None:
        delta = delta - torch.where(torch.isfinite(lse), dlse, 0.0)
    lse4 = lse.unsqueeze(-1)
    for _, r, c, qg, kg, vg, allowed, idx in _segments(p, q, k, v):
        dog, lg = r.get(dout), r.get(lse4).squeeze(-1)
        dg = r.get(delta.unsqueeze(-1)).squeeze(-1)
        gq, gk, gv, gm = torch_backward(
            dog, qg, kg, vg, lg, dg, allowed, p.mod, idx, q.shape[0], p.scale, p.lq, p.lk, mod_tensors
        )
        for acc, gr in zip(dmods, gm):
            if gr is not None:
                acc += gr
        r.add_(dq, gq)
        c.add_(dk, gk)
        c.add_(dv, gv)
    return dq, dk, dv, dmods


class _TiledAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, p: _Problem, q: Tensor, k: Tensor, v: Tensor, *mod_tensors: Tensor) -> tuple[Tensor, Tensor]:
        out, lse = _forward(p, q, k, v)
        ctx.p = p
        ctx.save_for_backward(q, k, v, out, lse, *mod_tensors)
        return out, lse

    @staticmethod
    def backward(ctx: Any, dout: Tensor | None, dlse: Tensor | None) -> tuple[Tensor | None, ...]:
        q, k, v, out, lse, *mod_tensors = ctx.saved_tensors
        if dout is None:
            dout = torch.zeros_like(out)
        dq, dk, dv, dmods = _backward(ctx.p, q, k, v, out, lse, dout.contiguous(), dlse, mod_tensors)
        return (None, dq, dk, dv, *dmods)


def _problem(inp: AttentionInputs, needs_grad: bool | None = None) -> _Problem:
    """The plan (and shared pattern) for ``inp``, reused from the last calls with the same mask/mod objects
    (``needs_grad``: as in :func:`tiled_plan_for`)."""
    needs_grad = _grad(inp, needs_grad)
    fused = _fusable(inp, needs_grad)
    fm = None if inp.mask is None else inp.mask.fingerprint()
    fmod = None if inp.score_mod is None else inp.score_mod.fingerprint()
    key: tuple[object, ...] | None = None
    cacheable = (fm is not None or inp.mask is None) and (fmod is not None or inp.score_mod is None)
    if cacheable and not inp.mod_tensors:  # never pin a tensor that carries a graph
        key = (fm, fmod, inp.B, inp.Hq, inp.Hkv, inp.Lq, inp.Lk, inp.D, inp.Dv, inp.compute_dtype, inp.device_type)
        key += (needs_grad,)  # a plan for forward and backward chooses other tiles
        hit = _CACHE.get(key)
        if hit is not None:
            _CACHE.move_to_end(key)
            return _Problem(
                hit[2],
                inp.mask,
                inp.score_mod,
                inp.scale,
                inp.Lq,
                inp.Lk,
                fused,
                master=hit[3],
                use_master=_use_master(inp, needs_grad),
                schedule=hit[4],
            )
    p = _Problem(
        tiled_plan_for(inp, needs_grad),
        inp.mask,
        inp.score_mod,
        inp.scale,
        inp.Lq,
        inp.Lk,
        fused,
        use_master=_use_master(inp, needs_grad),
    )
    if fused:
        p.schedule = _schedule(
            p.plan, inp.B, inp.Hq, inp.Hkv, inp.D, inp.Dv, inp.compute_dtype.itemsize, inp.Lq, inp.Lk, p.mod is not None
        )
    if key is not None:
        _CACHE[key] = [inp.mask, inp.score_mod, p.plan, None, p.schedule]
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return p


def _remember_master(p: _Problem) -> None:
    """Keep a freshly built shared pattern with its cached plan (small ones only, at most
    ``2 * _CACHE_MASTER_BYTES`` pinned in all: the oldest patterns are dropped first)."""
    master = p.master
    if master is None or master.m.numel() * master.m.element_size() > _CACHE_MASTER_BYTES:
        return
    for entry in _CACHE.values():
        if entry[2] is p.plan and entry[3] is None:
            entry[3] = master
            break
    pinned = 0
    for key in reversed(list(_CACHE)):
        entry = _CACHE[key]
        if entry[3] is not None:
            pinned += entry[3].m.numel() * entry[3].m.element_size()
            if pinned > 2 * _CACHE_MASTER_BYTES:
                entry[3] = None


def tiled_forward(inp: AttentionInputs) -> tuple[Tensor, Tensor]:
    """``(out, lse)`` of validated inputs; differentiable w.r.t. q, k, v and score-mod tensors."""
    cd = inp.compute_dtype
    q, k, v = (t.to(cd) if t.stride(-1) == 1 else t.to(cd).contiguous() for t in (inp.q, inp.k, inp.v))
    p = _problem(inp)
    if inp.needs_grad:
        mod_tensors = [] if p.fused else list(inp.mod_tensors)
        # torch.autograd.Function.apply carries no annotations
        out, lse = _TiledAttention.apply(p, q, k, v, *mod_tensors)  # type: ignore[no-untyped-call]
    else:
        out, lse = _forward(p, q, k, v)
    return out.to(inp.dtype), lse
