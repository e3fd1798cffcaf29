"""The plan of the tiled engine: which rectangles of the ``Lq x Lk`` score matrix to compute.

The plan reads the mask only through its public description (:meth:`~qkv.masks.Mask.band`,
``translation_invariant``, ``closed_form``, :meth:`~qkv.masks.Mask.block_map`). The mask's block map says
for every ``block_q x block_k`` tile whether it is EMPTY (skipped), FULL (no mask work) or PARTIAL (mask
evaluated on the tile only).
Each query-block row becomes a few *segments* -- a block of query rows against one contiguous key
range, of kind

* ``"full"``   every pair may attend (no mask work),
* ``"mask"``   the mask is evaluated on the segment only,
* ``"causal"`` query ``r0 + i`` sees keys ``k0 ... k0 + i`` (top-left causal inside the segment).

Segments of equal shape and kind form a :class:`Group`, computed by one batched kernel call
(the segments go into the batch dim). Every segment's ``(out, lse)`` is combined with
:func:`qkv.merge`, so a query row may be covered by any number of segments.

Shape legend: ``Lq``/``Lk`` query/key lengths, ``n`` segments in a group, ``tq``/``tk`` rows/keys
per segment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ...mask_base import FULL as _FULL
from ...mask_base import PARTIAL as _PARTIAL
from ...mask_base import Mask

__all__ = ["Group", "Plan", "make_plan", "causal_shift", "translation_invariant"]

FULL_SEG, MASK_SEG, CAUSAL_SEG = "full", "mask", "causal"


@dataclass
class Group:
    """Segments of one shape and kind: query rows ``q_starts[s] + (0..tq)`` x keys ``k_starts[s] + (0..tk)``.

    ``shared`` means every segment has the same mask pattern (translation-invariant mask and equal
    ``k_start - q_start``), so the pattern is evaluated once.
    """

    kind: str
    q_starts: np.ndarray
    k_starts: np.ndarray
    tq: int
    tk: int
    shared: bool = False

    @property
    def n(self) -> int:
        return len(self.q_starts)

    @property
    def pairs(self) -> int:
        return self.n * self.tq * self.tk


@dataclass
class Plan:
    """All groups of one problem; ``block_q``/``block_k`` are the tile sizes the block map used."""

    groups: list[Group] = field(default_factory=list)
    block_q: int = 0
    block_k: int = 0

    @property
    def pairs(self) -> int:
        """(query, key) pairs computed (masked ones inside PARTIAL segments included)."""
        return sum(g.pairs for g in self.groups)


def causal_shift(mask: Mask | None, lq: int, lk: int) -> int | None:
    """``c`` when ``mask`` is exactly "query ``i`` sees keys ``j <= i + c``" (its band has no lower edge), else None.

    Covers :func:`qkv.masks.causal` in both alignments, its intersections and its :func:`qkv.masks.offset`
    sub-blocks (ring attention); None for no mask.
    """
    band = None if mask is None else mask.band(lq, lk)
    return None if band is None or band.lo is not None or band.hi is None else band.hi


def is_full(mask: Mask | None, lq: int, lk: int) -> bool:
    """True for no mask or a mask whose band is unbounded (every pair may attend)."""
    return mask is None or (lambda b: b is not None and b.full)(mask.band(lq, lk))


def translation_invariant(mask: Mask | None) -> bool:
    """True when the mask at (q, kv) depends on ``kv - q`` only (bands, causal, full, no mask)."""
    return mask is None or mask.translation_invariant


def _kinds(mask: Mask | None, lq: int, lk: int, bq: int, bk: int) -> np.ndarray:
    """Block kinds ``(nq, nk)`` over all batch elements and heads: EMPTY only if empty everywhere,
    FULL only if full everywhere, else PARTIAL."""
    nq, nk = -(-lq // bq), -(-lk // bk)
    if mask is None:
        return np.full((nq, nk), _FULL, dtype=np.int8)
    bm = mask.block_map(lq, lk, bq, bk)  # (B|1, H|1, nq, nk)
    lo = bm.amin(dim=(0, 1))
    hi = bm.amax(dim=(0, 1))
    return torch.where(lo == hi, lo, torch.full_like(lo, _PARTIAL)).numpy().astype(np.int8)


def _row_segments(row: np.ndarray, merge_blocks: int, max_blocks: int) -> list[tuple[str, int, int]]:
    """Segments ``(kind, j0, j1)`` (block units) of one block row: runs of non-empty blocks, FULL and
    PARTIAL sub-runs merged while a merged (masked) segment stays within ``merge_blocks``, and no
    segment longer than ``max_blocks``."""
    segs: list[list[Any]] = []
    nz = np.flatnonzero(row)
    if nz.size == 0:
        return []
    kinds = row[nz]
    cuts = np.flatnonzero((np.diff(nz) != 1) | (np.diff(kinds) != 0)) + 1  # new run or kind change
    starts, ends = np.concatenate(([0], cuts)).tolist(), np.concatenate((cuts, [nz.size])).tolist()
    for a, b in zip(starts, ends):
        j0, j1 = int(nz[a]), int(nz[b - 1]) + 1
        kind = FULL_SEG if kinds[a] == _FULL else MASK_SEG
        if segs and segs[-1][2] == j0 and MASK_SEG in (segs[-1][0], kind) and j1 - segs[-1][1] <= merge_blocks:
            segs[-1] = [MASK_SEG, segs[-1][1], j1]
        else:
            segs.append([kind, j0, j1])
    out = []
    for kind, j0, j1 in segs:
        n = -(-(j1 - j0) // max_blocks)
        step = -(-(j1 - j0) // n)
        out += [(kind, a, min(a + step, j1)) for a in range(j0, j1, step)]
    return out


def _block_plan(
    mask: Mask | None, lq: int, lk: int, bq: int, bk: int, merge_keys: int, max_keys: int, shared_all: bool = False
) -> Plan:
    kinds = _kinds(mask, lq, lk, bq, bk)
    shared_ok = translation_invariant(mask)
    merge_blocks = max(1, merge_keys // bk)
    max_blocks = max(1, max_keys // bk)
    # Pack: consecutive query-block rows with the same segment (kind and key range) become one taller
    # segment -- fewer, fatter kernel calls (a document's diagonal block is one call, not one per tile).
    packed: list[list[Any]] = []  # [kind, q0, q1, k0, k1]
    open_: dict[tuple[str, int, int], list[Any]] = {}  # (kind, k0, k1) -> the segment ending at the current row
    for i in range(kinds.shape[0]):
        q0 = i * bq
        q1 = min(q0 + bq, lq)
        still: dict[tuple[str, int, int], list[Any]] = {}
        for kind, j0, j1 in _row_segments(kinds[i], merge_blocks, max_blocks):
            key = (kind, j0 * bk, min(j1 * bk, lk))
            seg = open_.get(key)
            if seg is not None and seg[2] == q0:
                seg[2] = q1
            else:
                seg = [kind, q0, q1, key[1], key[2]]
                packed.append(seg)
            still[key] = seg
        open_ = still
    # Group segments of one shape; the segments of a group never share a query row.
    groups: dict[
        tuple[str, int, int, int | None], list[list[Any]]
    ] = {}  # shape -> [[q_starts, k_starts, end of the last row], ...]
    for kind, q0, q1, k0, k1 in packed:
        tq, tk = q1 - q0, k1 - k0
        diff = k0 - q0 if (shared_all or (shared_ok and kind == MASK_SEG)) else None
        subs = groups.setdefault((kind, tq, tk, diff), [])
        sub = next((s for s in subs if s[2] <= q0), None)
        if sub is None:
            sub = [[], [], 0]
            subs.append(sub)
        sub[0].append(q0)
        sub[1].append(k0)
        sub[2] = q1
    plan = Plan(block_q=bq, block_k=bk)
    for (kind, tq, tk, diff), subs in groups.items():
        for qs, ks, _ in subs:
            plan.groups.append(
                Group(
                    kind,
                    np.asarray(qs, dtype=np.int64),
                    np.asarray(ks, dtype=np.int64),
                    tq,
                    tk,
                    shared=diff is not None,
                )
            )
    return plan


def _causal_plan(c: int, lq: int, lk: int) -> Plan:
    """Query ``i`` sees keys ``j <= i + c``: at most one FULL segment (keys every row sees) and one
    top-left causal segment, both over all non-empty rows."""
    plan = Plan(block_q=lq, block_k=lk)
    r0 = max(0, -c)
    if r0 >= lq:
        return plan  # every row is empty
    a = r0 + c  # keys [0, a) are seen by every row >= r0
    one = np.zeros(1, dtype=np.int64)
    if a + 1 >= lk:  # even the first row sees every key (e.g. one decoding step)
        plan.groups.append(Group(FULL_SEG, one + r0, one, lq - r0, lk))
        return plan
    if a > 0:
        plan.groups.append(Group(FULL_SEG, one + r0, one, lq - r0, min(a, lk)))
    if a < lk:
        plan.groups.append(Group(CAUSAL_SEG, one + r0, one + a, lq - r0, lk - a))
    return plan


#: Backward cost per computed pair relative to the forward's (dense, N = 4,096: 2.5x), and how much faster it
#: loses efficiency on short query tiles than the forward does (``python -m bench.ceiling``: per computed pair the
#: fused backward runs at 0.26 / 0.35 / 0.49 / 0.66 of its dense rate on 32 / 64 / 128 / 256-row tiles, the
#: forward at 0.42 / 0.57 / 0.67 / 0.82).
_BWD_WEIGHT, _BWD_SHORT_ROWS = 2.5, 85.0


def _cost(plan: Plan, heads: int, kv_heads: int, d: int, backward: bool = False) -> float:
    """Rough cost in pair-heads, fitted to the fused CPU kernel on this machine kind: small tiles are
    less efficient (``1 + 16/tq + 16/tk`` forward; the backward suffers more from short query tiles),
    masks cost a little, gathered (copied) keys/values and each kernel call (Python, gathers, merges) cost
    a fixed amount. ``backward``: the cost of forward and backward together (the inputs need gradients)."""
    work = 0.0
    for g in plan.groups:
        extra = 0.0 if g.kind != MASK_SEG else 0.1 if g.shared else 0.3
        eff = 1.0 + 16.0 / g.tq + 16.0 / g.tk + extra
        if backward:
            eff += _BWD_WEIGHT * (1.0 + _BWD_SHORT_ROWS / g.tq + 16.0 / g.tk + extra)
        work += g.pairs * heads * eff
        if g.n > 2 and len(set(np.diff(g.k_starts).tolist())) > 1:  # irregular starts: gathered or split
            work += 0.15 * g.n * g.tk * kv_heads * 2 * d * (2 if backward else 1)
    return work + 250_000.0 * len(plan.groups) * (2 if backward else 1)


def make_plan(
    mask: Mask | None,
    lq: int,
    lk: int,
    *,
    fused: bool,
    heads: int = 1,
    kv_heads: int = 1,
    head_dim: int = 64,
    whole_rows: bool = False,
    master: bool = False,
    backward: bool = False,
) -> Plan:
    """The plan for an ``lq x lk`` problem.

    Args:
        mask: a :class:`qkv.masks.Mask` or None.
        fused: plan for the fused CPU kernel (large segments; exact causal masks as one ``is_causal``
            call) rather than for pure-PyTorch tiles (bounded segments).
        heads, kv_heads, head_dim: ``B * Hq``, ``B * Hkv`` and ``D`` (weigh compute against copies and
            per-call overhead when choosing the tile size).
        whole_rows: merge FULL and PARTIAL runs without limit (an additive score mod needs a bias
            tensor on every segment anyway).
        master: masks and mods are translation-invariant and come as views of one precomputed
            pattern, so segments are free to be long and every group shares one pattern.
        backward: the backward will run on the same plan (the inputs need gradients): choose the tiles
            for forward and backward together (the backward favours taller query tiles).
    """
    if lq == 0 or lk == 0:
        return Plan(block_q=max(lq, 1), block_k=max(lk, 1))
    if fused and not whole_rows:
        c = 0 if mask is None else causal_shift(mask, lq, lk)
        if is_full(mask, lq, lk):
            return Plan([Group(FULL_SEG, np.zeros(1, np.int64), np.zeros(1, np.int64), lq, lk)], lq, lk)
        if c is not None:
            return _causal_plan(c, lq, lk)
    if fused:
        merge_keys, max_keys = (1 << 62, 1 << 62 if master else 8192) if whole_rows else (1024, 1 << 62)
        tiles = (64, 128, 256, 512) if mask is None or mask.closed_form else (128,)
    else:
        merge_keys, max_keys, tiles = 1024, 4096, (256,)
    best: tuple[float, Plan] | None = None
    if fused and (lq * lk * (heads if whole_rows else 1) * 4 <= 48 << 20):  # small: one dense segment
        one = np.zeros(1, np.int64)
        whole = Plan(
            [
                Group(
                    MASK_SEG if (mask is not None or whole_rows) else FULL_SEG,
                    one,
                    one,
                    lq,
                    lk,
                    shared=master or translation_invariant(mask),
                )
            ],
            lq,
            lk,
        )
        best = (_cost(whole, heads, kv_heads, head_dim, backward), whole)
    for t in tiles:
        bq, bk = min(t, lq), min(t, lk)
        plan = _block_plan(mask, lq, lk, bq, bk, merge_keys, max_keys, shared_all=master)
        cost = _cost(plan, heads, kv_heads, head_dim, backward)
        if best is None or cost < best[0]:
            best = (cost, plan)
        if t >= max(lq, lk):
            break
    assert best is not None  # tiles is never empty
    return best[1]
