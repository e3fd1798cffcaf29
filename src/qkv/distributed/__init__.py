"""qkv.distributed -- exact attention over a sequence sharded across processes (ring attention).

* :func:`ring_attention` -- every rank holds the q, k, v of its positions; K/V shards travel around
  the ring over ``torch.distributed`` point-to-point ops and partial states merge exactly with
  :func:`qkv.merge`. Masks and score mods use global positions; backward works.
* :func:`shard` / :func:`gather` -- cut a sequence into per-rank shards (``contiguous`` or the
  load-balanced ``zigzag`` layout) and put it back together.
* :mod:`qkv.distributed.launch` -- run a function on local gloo processes, bounded and cleaned up.
* ``python -m qkv.distributed.demo --world-size 4`` -- compare against single-process attention.
"""

from . import launch, plan, sharding
from .ring import ring_attention
from .sharding import LAYOUTS, RingError, gather, positions, segments, shard, split

__all__ = [
    "ring_attention",
    "shard",
    "gather",
    "split",
    "positions",
    "segments",
    "LAYOUTS",
    "RingError",
    "launch",
    "plan",
    "sharding",
]
