"""Sequence sharding for ring attention: which global positions each rank holds.

Two layouts split a sequence of ``N`` positions over ``W`` ranks (shape legend: ``B`` batch,
``H`` heads, ``L`` length, ``D`` head dim; the sequence dim is usually 2 of ``(B, H, L, D)``):

``contiguous``: rank ``r`` holds one run of about ``N / W`` positions (the first ``N % W`` ranks one
more). Under a causal mask rank ``r`` needs the keys of ranks ``0..r`` only, so the last rank works
``W`` times as much as the first (load imbalance)::

    N = 8, W = 2     positions 0 1 2 3 | 4 5 6 7
                     rank      0 0 0 0 | 1 1 1 1

``zigzag`` (load-balanced): the sequence is cut into ``2W`` chunks and rank ``r`` holds chunks ``r`` and
``2W - 1 - r`` (an early and a late one), so under a causal mask every rank attends to the same
number of (query, key) chunk pairs::

    N = 8, W = 2     chunks    c0  c1  c2  c3
                     positions 0 1 2 3 4 5 6 7
                     rank      0 0 1 1 1 1 0 0     rank 0 = [c0, c3], rank 1 = [c1, c2]

A rank's local tensor is its chunks concatenated in that order. Uneven lengths are fine: chunk
sizes differ by at most one.

Example:
    >>> import torch
    >>> from qkv.distributed import sharding
    >>> sharding.segments(8, 2, 0, "zigzag")
    [(0, 2), (6, 2)]
    >>> sharding.positions(5, 2, 1, "contiguous").tolist()
    [3, 4]
    >>> x = torch.arange(8)
    >>> [p.tolist() for p in sharding.split(x, 0, 2, "zigzag")]
    [[0, 1, 6, 7], [2, 3, 4, 5]]
"""

from __future__ import annotations

from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = [
    "LAYOUTS",
    "split_sizes",
    "segments",
    "positions",
    "local_length",
    "split",
    "shard",
    "gather",
    "check_layout",
    "group_info",
    "wait_all",
    "RingError",
]

LAYOUTS = ("contiguous", "zigzag")


class RingError(RuntimeError):
    """A peer process died, hung or timed out during a distributed qkv operation."""


def check_layout(layout: str) -> str:
    """Return ``layout`` if it is one of :data:`LAYOUTS`, else raise a ValueError that says how to fix it."""
    if layout not in LAYOUTS:
        raise ValueError(
            f"layout must be one of {LAYOUTS}, got {layout!r}; use 'zigzag' to balance causal "
            "masks over ranks, 'contiguous' otherwise"
        )
    return layout


def _check_count(name: str, value, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def split_sizes(n: int, parts: int) -> list[int]:
    """Balanced sizes of ``parts`` consecutive pieces of ``n`` items: the first ``n % parts`` get one more.

    >>> split_sizes(10, 4)
    [3, 3, 2, 2]
    """
    _check_count("n", n, 0)
    _check_count("parts", parts, 1)
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


def segments(n: int, world_size: int, rank: int, layout: str = "contiguous") -> list[tuple[int, int]]:
    """The global runs ``[(start, length), ...]`` that ``rank`` holds, in local order.

    Args:
        n: global sequence length ``N``.
        world_size: number of ranks ``W``.
        rank: this rank, ``0 <= rank < W``.
        layout: ``"contiguous"`` (one run) or ``"zigzag"`` (runs ``rank`` and ``2W - 1 - rank`` of ``2W``).
    """
    _check_count("world_size", world_size, 1)
    if not isinstance(rank, int) or not 0 <= rank < world_size:
        raise ValueError(f"rank must be an int in [0, {world_size}), got {rank!r}")
    check_layout(layout)
    if layout == "contiguous":
        sizes = split_sizes(n, world_size)
        return [(sum(sizes[:rank]), sizes[rank])]
    sizes = split_sizes(n, 2 * world_size)
    starts = [sum(sizes[:i]) for i in range(2 * world_size)]
    return [(starts[c], sizes[c]) for c in (rank, 2 * world_size - 1 - rank)]


def positions(n: int, world_size: int, rank: int, layout: str = "contiguous") -> Tensor:
    """Global positions ``(L_local,)`` int64 of the rank's shard, in local order (for RoPE, masks, ...)."""
    segs = segments(n, world_size, rank, layout)
    return torch.cat([torch.arange(s, s + length) for s, length in segs])


def local_length(n: int, world_size: int, rank: int, layout: str = "contiguous") -> int:
    """Number of positions ``rank`` holds."""
    return sum(length for _, length in segments(n, world_size, rank, layout))


def _dim(x: Tensor, dim: int) -> int:
    if not isinstance(x, Tensor):
        raise ValueError(f"expected a tensor to shard, got {type(x).__name__}")
    if not isinstance(dim, int) or not -x.dim() <= dim < x.dim():
        raise ValueError(
            f"dim must be an int in [{-x.dim()}, {x.dim()}) for a tensor of shape {tuple(x.shape)}, "
            f"got {dim!r}; the sequence dim of (B, H, L, D) is 2"
        )
    return dim % x.dim()


def split(x: Tensor, dim: int, world_size: int, layout: str = "contiguous") -> list[Tensor]:
    """Every rank's shard of ``x`` along ``dim`` (no communication; ``x`` is the whole sequence).

    Returns ``W`` tensors; rank ``r``'s is the concatenation of its :func:`segments` (a view for
    ``contiguous``, a copy for ``zigzag``).
    """
    d = _dim(x, dim)
    out = []
    for r in range(world_size):
        parts = [x.narrow(d, s, length) for s, length in segments(x.shape[d], world_size, r, layout)]
        out.append(parts[0] if len(parts) == 1 else torch.cat(parts, dim=d))
    return out


def group_info(group=None) -> tuple[int, int]:
    """``(rank, world_size)`` of this process in ``group`` (default: the world); a clear error if
    ``torch.distributed`` has not been initialised."""
    if not dist.is_available() or not dist.is_initialized():
        raise ValueError(
            "torch.distributed is not initialised; call torch.distributed.init_process_group(...) "
            "first, or run your function with qkv.distributed.launch.spawn(fn, world_size)"
        )
    rank = dist.get_rank(group)
    if rank < 0:
        raise ValueError("this process is not a member of the given process group; pass a group it belongs to")
    return rank, dist.get_world_size(group)


def shard(x: Tensor, dim: int, group=None, layout: str = "contiguous") -> Tensor:
    """This rank's shard of the full tensor ``x`` (identical on every rank) along ``dim``.

    Args:
        x: the whole sequence, e.g. q ``(B, H, N, D)``.
        dim: the sequence dim (2 for ``(B, H, L, D)``).
        group: process group (default: the world).
        layout: ``"contiguous"`` or ``"zigzag"``; pass the same layout to ``ring_attention`` and :func:`gather`.

    Returns:
        ``x`` restricted to the rank's positions (:func:`positions`), differentiable (a slice or a concatenation).
    """
    rank, world = group_info(group)
    d = _dim(x, dim)
    parts = [x.narrow(d, s, length) for s, length in segments(x.shape[d], world, rank, layout)]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=d)


def wait_all(works, what: str, timeout: float | None = None) -> None:
    """Wait for ``torch.distributed`` work handles; turn a peer failure into a :class:`RingError`
    that says what this rank was doing."""
    for w in works:
        try:
            if timeout is None:
                w.wait()
            else:
                w.wait(timedelta(seconds=timeout))
        except Exception as e:  # gloo raises RuntimeError / DistBackendError with a transport message
            raise RingError(
                f"{what} failed: a peer process died, hung or timed out "
                f"({type(e).__name__}: {str(e).strip()[:400]}). Check the other ranks' logs; every "
                "rank must call the same collective operations (forward and backward)."
            ) from e


def gather(x: Tensor, dim: int, group=None, layout: str = "contiguous", timeout: float | None = None) -> Tensor:
    """Reassemble the whole sequence from every rank's shard (inverse of :func:`shard`); a collective.

    Shards may have different lengths (they are padded for the exchange and trimmed). The result is
    the same on every rank. Not differentiable (use it for outputs and gradients, not inside a loss).

    Args:
        x: this rank's shard, e.g. out ``(B, H, L_local, D)``.
        dim: the sequence dim.
        group: process group (default: the world).
        layout: the layout the shards were made with.
        timeout: seconds to wait for peers (default: the process group's timeout).

    Raises:
        RingError: a peer died or timed out.
        ValueError: the shard lengths do not form ``layout`` (e.g. zigzag shards of another length).
    """
    rank, world = group_info(group)
    d = _dim(x, dim)
    check_layout(layout)
    n_local = torch.tensor([x.shape[d]], dtype=torch.int64, device=x.device)
    length_bufs = [torch.zeros_like(n_local) for _ in range(world)]
    wait_all(
        [dist.all_gather(length_bufs, n_local, group=group, async_op=True)],
        f"gather: rank {rank} exchanging shard lengths",
        timeout,
    )
    lengths = [int(t) for t in length_bufs]
    n = sum(lengths)
    expected = [local_length(n, world, r, layout) for r in range(world)]
    if layout == "zigzag" and lengths != expected:
        raise ValueError(
            f"gather(layout='zigzag'): shard lengths {lengths} are not the zigzag split of N={n} "
            f"(expected {expected}); shard with qkv.distributed.shard(x, dim, layout='zigzag')"
        )
    longest = max(lengths)
    pad_shape = list(x.shape)
    pad_shape[d] = longest - x.shape[d]
    padded = torch.cat([x, x.new_zeros(pad_shape)], dim=d).contiguous()  # (..., max L_local, ...)
    bufs = [torch.empty_like(padded) for _ in range(world)]
    wait_all(
        [dist.all_gather(bufs, padded, group=group, async_op=True)], f"gather: rank {rank} exchanging shards", timeout
    )
    if layout == "contiguous":
        return torch.cat([b.narrow(d, 0, length) for b, length in zip(bufs, lengths)], dim=d)
    pieces = {}
    for r, b in enumerate(bufs):
        offset = 0
        for start, length in segments(n, world, r, layout):
            if length:  # an empty chunk would shadow the chunk that starts where it does
                pieces[start] = b.narrow(d, offset, length)
            offset += length
    if not pieces:
        return bufs[0].narrow(d, 0, 0)
    return torch.cat([pieces[s] for s in sorted(pieces)], dim=d)
