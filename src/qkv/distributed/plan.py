"""The schedule of ring attention, computed identically on every rank (no communication).

Shape legend: ``W`` ranks; rank ``i`` holds query runs ``q_segments[i]`` and key/value runs
``kv_segments[i]`` of a global ``Nq x Nk`` problem (see :mod:`qkv.distributed.sharding`).

For every (query run, key run) pair the mask's block map says whether it is EMPTY (skipped: not
computed), FULL (computed without evaluating the mask) or PARTIAL (computed with the mask).
Rank ``i`` *needs* shard ``j`` when any of its pairs with ``j`` is not EMPTY.

K/V shard ``j`` starts at rank ``j`` and moves one rank per step (``j -> j+1 -> ...``). It travels only
``hops[j]`` steps: up to the last rank on its way that needs it, so masks that leave whole shard
pairs empty also save communication. With a causal mask and the contiguous layout, shard ``j`` is
needed by ranks ``j..W-1`` only: it is never sent across the wrap-around ``W-1 -> 0``, which halves
the messages (``W(W-1)/2`` instead of ``W(W-1)``) but leaves rank ``W-1`` with ``W`` times the work of
rank 0. The zigzag layout balances the work (every rank computes the same number of chunk pairs)
at the price of sending every shard all the way round. In the backward pass the dK/dV
accumulator of shard ``j`` follows K/V on the same path and then goes straight home from the last
rank that needed it (one message, not the rest of the ring).

Example (causal, contiguous, W = 4: shard 0 visits every rank, shard 3 stays home):
    >>> from qkv import masks
    >>> from qkv.distributed.plan import plan_ring
    >>> p = plan_ring(masks.causal(), [4, 4, 4, 4], [4, 4, 4, 4], "contiguous")
    >>> p.hops, p.messages()
    ((3, 2, 1, 0), 6)
    >>> [p.holds(3, s) for s in range(4)]
    [3, 2, 1, 0]
    >>> [p.holds(0, s) for s in range(4)]
    [0, None, None, None]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .. import masks as _masks
from .sharding import check_layout, segments, split_sizes

__all__ = ["RingPlan", "plan_ring", "pair_kinds", "MAX_BLOCKS"]

EMPTY, PARTIAL, FULL = _masks.EMPTY, _masks.PARTIAL, _masks.FULL

#: Largest number of blocks per side of the global block map used to classify shard pairs. When the
#: shard boundaries have a common divisor ``g`` with ``N / g <= MAX_BLOCKS`` the classification is exact;
#: otherwise a coarser grid is used and it is conservative (an empty pair may be computed, never the reverse).
MAX_BLOCKS = 1024

Segments = tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class RingPlan:
    """Who computes what and which K/V shard is where at every step.

    Attributes:
        world_size: ``W``.
        q_segments: per rank, its query runs ``((global_start, length), ...)`` in local order.
        kv_segments: per rank, its key/value runs.
        kinds: ``kinds[i][j][a][b]`` is EMPTY/PARTIAL/FULL for query run ``a`` of rank ``i`` against
            key run ``b`` of rank ``j``.
        hops: ``hops[j]``: how many ranks after ``j`` shard ``j`` travels (0 = it never leaves home).
    """

    world_size: int
    q_segments: tuple[Segments, ...]
    kv_segments: tuple[Segments, ...]
    kinds: tuple
    hops: tuple[int, ...]

    def needs(self, i: int, j: int) -> bool:
        """Whether rank ``i`` computes anything against K/V shard ``j``."""
        return any(kind != EMPTY for row in self.kinds[i][j] for kind in row)

    def holds(self, rank: int, step: int) -> int | None:
        """The K/V shard ``rank`` holds at ``step`` (``None``: nothing; the shard did not travel this far)."""
        if not 0 <= step < self.world_size:
            return None
        j = (rank - step) % self.world_size
        return j if step <= self.hops[j] else None

    def forwards(self, rank: int, step: int) -> bool:
        """Whether ``rank`` sends the shard it holds at ``step`` on to ``rank + 1`` (for ``step + 1``)."""
        j = self.holds(rank, step)
        return j is not None and step + 1 <= self.hops[j]

    def last_holder(self, j: int) -> int:
        """The rank where shard ``j``'s journey ends (it sends the dK/dV accumulator home)."""
        return (j + self.hops[j]) % self.world_size

    def pairs(self, i: int, j: int):
        """``(a, b, kind)`` for every non-empty (query run ``a`` of rank ``i``, key run ``b`` of rank ``j``)."""
        return [(a, b, kind) for a, row in enumerate(self.kinds[i][j]) for b, kind in enumerate(row) if kind != EMPTY]

    def work(self, rank: int) -> int:
        """(query, key) pairs that ``rank`` computes scores for (EMPTY pairs skipped): a load measure."""
        total = 0
        for j in range(self.world_size):
            for a, b, _ in self.pairs(rank, j):
                total += self.q_segments[rank][a][1] * self.kv_segments[j][b][1]
        return total

    def messages(self) -> int:
        """Number of K/V shard messages in one forward pass (``W(W-1)`` for a full ring)."""
        return sum(self.hops)


def _grid(bounds, n: int, max_blocks: int) -> int:
    """Block size: the gcd of the run boundaries (exact), or coarser when that gives too many blocks."""
    g = 0
    for x in bounds:
        if 0 < x < n:
            g = math.gcd(g, x)
    g = g or max(n, 1)
    if -(-n // g) > max_blocks:
        g = -(-n // max_blocks)
    return g


def pair_kinds(mask, q_segments, kv_segments, nq: int, nk: int, max_blocks: int = MAX_BLOCKS):
    """Classify every (query run, key run) pair of a global ``nq x nk`` problem as EMPTY/PARTIAL/FULL.

    Uses ``mask.block_map`` (closed form for structured masks; row-block evaluation otherwise) on
    a grid whose blocks tile the runs, so no ``nq x nk`` tensor is built. A pair is EMPTY only when
    every batch element and head leaves it empty.

    Returns:
        ``kinds[i][j][a][b]`` nested tuples.
    """
    W = len(q_segments)
    mask = _masks.as_mask(mask)
    if mask is None:
        full = None
    else:
        bq = _grid([x for segs in q_segments for s, length in segs for x in (s, s + length)], nq, max_blocks)
        bk = _grid([x for segs in kv_segments for s, length in segs for x in (s, s + length)], nk, max_blocks)
        bmap = mask.block_map(nq, nk, bq, bk)  # (B|1, H|1, nq/bq, nk/bk)
        empty = (bmap == EMPTY).flatten(0, 1).all(0)  # (nq/bq, nk/bk): empty for every batch and head
        full = (bmap == FULL).flatten(0, 1).all(0)

    def kind(qs, lq, ks, lk):
        if lq == 0 or lk == 0:
            return EMPTY
        if full is None:
            return FULL
        rows = slice(qs // bq, -(-(qs + lq) // bq))
        cols = slice(ks // bk, -(-(ks + lk) // bk))
        if bool(empty[rows, cols].all()):
            return EMPTY
        return FULL if bool(full[rows, cols].all()) else PARTIAL

    return tuple(
        tuple(
            tuple(tuple(kind(qs, lq, ks, lk) for ks, lk in kv_segments[j]) for qs, lq in q_segments[i])
            for j in range(W)
        )
        for i in range(W)
    )


def _layout_segments(lengths, layout: str, what: str) -> tuple[Segments, ...]:
    W, n = len(lengths), sum(lengths)
    if layout == "contiguous":
        starts = [sum(lengths[:r]) for r in range(W)]
        return tuple(((starts[r], lengths[r]),) for r in range(W))
    expected = [sum(length for _, length in segments(n, W, r, "zigzag")) for r in range(W)]
    if list(lengths) != expected:
        raise ValueError(
            f"layout='zigzag' but the {what} shard lengths are {list(lengths)}, not the zigzag split of "
            f"N={n} over {W} ranks ({expected}, chunks {split_sizes(n, 2 * W)}); shard with "
            "qkv.distributed.shard(x, 2, layout='zigzag')"
        )
    return tuple(tuple(segments(n, W, r, "zigzag")) for r in range(W))


def plan_ring(mask, q_lengths, kv_lengths, layout: str = "contiguous", max_blocks: int = MAX_BLOCKS) -> RingPlan:
    """Plan ring attention for per-rank local lengths ``q_lengths`` / ``kv_lengths`` (length ``W`` each).

    Args:
        mask: the global mask (a :mod:`qkv.masks` mask, bool tensor or None) of the ``sum(q_lengths) x
            sum(kv_lengths)`` problem.
        q_lengths, kv_lengths: local sequence length of every rank.
        layout: ``"contiguous"`` (any lengths) or ``"zigzag"`` (lengths must be the zigzag split).
        max_blocks: see :data:`MAX_BLOCKS`.
    """
    check_layout(layout)
    q_lengths, kv_lengths = [int(x) for x in q_lengths], [int(x) for x in kv_lengths]
    if len(q_lengths) != len(kv_lengths) or not q_lengths:
        raise ValueError(
            f"need one query and one key/value length per rank, got {len(q_lengths)} and {len(kv_lengths)}"
        )
    W = len(q_lengths)
    qsegs = _layout_segments(q_lengths, layout, "query")
    kvsegs = _layout_segments(kv_lengths, layout, "key/value")
    kinds = pair_kinds(mask, qsegs, kvsegs, sum(q_lengths), sum(kv_lengths), max_blocks)
    proto = RingPlan(W, qsegs, kvsegs, kinds, (0,) * W)
    hops = tuple(max([t for t in range(W) if proto.needs((j + t) % W, j)], default=0) for j in range(W))
    return RingPlan(W, qsegs, kvsegs, kinds, hops)
