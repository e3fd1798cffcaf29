"""Every rank of a ring must solve the same problem: a fingerprint of the mask, the score mod and the scale,
compared across ranks before the first K/V shard moves.

Ranks given different masks plan different communication (:mod:`qkv.distributed.plan`): one waits for a
shard the other never sends, and the wait ends in a timeout that blames a dead peer. :func:`check_same_problem`
all-gathers a small tensor per rank -- a SHA-256 digest of each item's canonical description plus its first
bytes for the message -- and raises the same ValueError on every rank, saying which item differs and how.

The description (:func:`describe`) is deterministic across processes: the class and the attributes of masks
and mods (so the causal alignment, window sizes, ALiBi slopes and tensor contents are part of it), a digest
of each tensor's bytes, ``module.qualname`` of plain functions (their closures are not compared).

Example:
    >>> import qkv
    >>> print(describe(qkv.masks.causal("top_left")))
    _Diagonal(align='top_left', left=None, name="causal(align='top_left')", right=0)
"""

from __future__ import annotations

import functools
import hashlib
import types

import torch
import torch.distributed as dist

from .sharding import wait_all

__all__ = ["describe", "check_same_problem"]

_SHORT = 120  # bytes of each item's description that travel, for the message
_DEPTH = 12
_NAMED = (types.FunctionType, types.MethodType, types.BuiltinFunctionType, types.ModuleType, type)


def describe(obj, depth: int = 0) -> str:
    """A canonical text for ``obj`` that is the same in every process for equal objects."""
    if depth > _DEPTH:
        return "..."
    d = depth + 1
    if obj is None or isinstance(obj, (bool, int, float, str, torch.dtype, torch.device)):
        return repr(obj)
    if isinstance(obj, torch.Tensor):
        t = obj.detach().to("cpu").contiguous()
        data = t.to(torch.uint8) if t.dtype == torch.bool else t
        digest = hashlib.sha256(data.reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()[:16]
        return f"tensor(shape={tuple(t.shape)}, dtype={t.dtype}, sha256={digest})"
    if isinstance(obj, (list, tuple)):
        inner = ", ".join(describe(x, d) for x in obj)
        return f"[{inner}]" if isinstance(obj, list) else f"({inner})"
    if isinstance(obj, dict):
        return "{" + ", ".join(f"{describe(k, d)}: {describe(v, d)}" for k, v in sorted(obj.items(), key=str)) + "}"
    if isinstance(obj, functools.partial):
        return f"partial({describe(obj.func, d)}, {describe(obj.args, d)}, {describe(obj.keywords, d)})"
    attrs = getattr(obj, "__dict__", None)
    if attrs is not None and not isinstance(obj, _NAMED):  # masks, mods, other objects: class + attributes
        fields = ", ".join(f"{k}={describe(v, d)}" for k, v in sorted(attrs.items()) if not k.startswith("__"))
        return f"{type(obj).__qualname__}({fields})"
    name = getattr(obj, "__qualname__", None) or type(obj).__qualname__
    return f"{getattr(obj, '__module__', '?')}.{name}"


def _readable(obj) -> str:
    """The object's own repr where it has one (masks: ``causal(align='top_left')``), else :func:`describe`."""
    # mypy reads a class's __repr__ and object's as different callables, so it calls the test always true
    if obj is not None and type(obj).__repr__ is not object.__repr__:  # type: ignore[comparison-overlap]
        return repr(obj)
    return describe(obj)


def check_same_problem(
    items: dict,
    *,
    group=None,
    rank: int = 0,
    world: int = 1,
    device=None,
    timeout: float | None = None,
    who: str = "ring_attention",
) -> None:
    """All-gather a fingerprint of ``items`` (name -> object) and raise if any rank's differs (a collective).

    Raises:
        ValueError: the same message on every rank: which item differs, and each rank's description.
        RingError: a peer died or timed out during the exchange.
    """
    names = list(items)
    full = [describe(items[n]) for n in names]
    short = [_readable(items[n]).encode("utf-8", "replace")[:_SHORT] for n in names]
    row = [int.from_bytes(hashlib.sha256(s.encode("utf-8", "replace")).digest()[:7], "big") for s in full]
    for s in short:
        row += list(s) + [0] * (_SHORT - len(s))
    mine = torch.tensor(row, dtype=torch.int64, device=device)
    bufs = [torch.empty_like(mine) for _ in range(world)]
    wait_all(
        [dist.all_gather(bufs, mine, group=group, async_op=True)],
        f"{who}: rank {rank} of {world} exchanging the problem's fingerprint",
        timeout,
    )
    rows = [b.tolist() for b in bufs]
    for i, name in enumerate(names):
        digests = [r[i] for r in rows]
        if len(set(digests)) == 1:
            continue
        texts = []
        for r in rows:
            raw = r[len(names) + i * _SHORT : len(names) + (i + 1) * _SHORT]
            texts.append(bytes(b for b in raw if b).decode("utf-8", "replace"))
        groups: dict[int, list[int]] = {}
        for k, dig in enumerate(digests):
            groups.setdefault(dig, []).append(k)
        how = "; ".join(
            f"rank{'s' if len(ks) > 1 else ''} {', '.join(map(str, ks))}: {texts[ks[0]]}" for ks in groups.values()
        )
        same_text = len({texts[ks[0]] for ks in groups.values()}) == 1
        raise ValueError(
            f"{who}: the ranks disagree on the {name} ({how})"
            + (" -- equal descriptions, different contents (tensor values or attributes)" if same_text else "")
            + f"; every rank must pass the same {name} for the global problem (build it the same "
            "way on every rank, from the global lengths, not the local shard)"
        )
