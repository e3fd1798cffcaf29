"""A mask and a score mod as a plain string and a list of tensors -- what a registered op may take.

``torch.compile`` needs the tiled engine as one opaque op (:mod:`.ops`) whose arguments are tensors and plain
values, never Python objects. :func:`describe` turns the (mask, score mod) pair into a *spec* -- a string that
holds the structure and every plain value (classes, alignments, window sizes, composition) -- and the tensors
they hold (padding lengths, document ids, ALiBi slopes, bias tensors), in first-use order. :func:`rebuild`
turns them back into equal objects inside the op, where planning reads the actual tensor values.

:func:`describe` is plain Python over constants, so TorchDynamo folds it at trace time (no graph break): the
spec is a constant of the graph, the tensors are its inputs. Objects that hold something else than tensors
and plain values (a user's function) cannot be described: :func:`describe` returns None.

Example:
    >>> import torch
    >>> from qkv import masks
    >>> spec, tensors = describe(masks.causal() & masks.padding(torch.tensor([3, 5])), None)
    >>> len(tensors), tensors[0].tolist()
    (1, [3, 5])
    >>> mask, mod = rebuild(spec, tensors)
    >>> bool((mask.dense(2, 1, 4, 6) == (masks.causal() & masks.padding(torch.tensor([3, 5]))).dense(2, 1, 4, 6)).all())
    True
"""

from __future__ import annotations

import ast
import importlib
import math
from collections import OrderedDict
from typing import Any

import torch
from torch import Tensor

__all__ = ["describe", "rebuild", "cached_rebuild"]

_PLAIN = (int, float, str, bool)
_ROOT = "qkv."  # only qkv's own classes are rebuilt


class _NotDescribable(Exception):
    pass


def _describe(obj: Any, tensors: list[Tensor], depth: int) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):  # repr() would not read back
        raise _NotDescribable()
    if obj is None or isinstance(obj, _PLAIN):
        return obj
    if isinstance(obj, Tensor):
        for i, t in enumerate(tensors):
            if t is obj:  # one tensor held twice (document ids of queries and keys) is passed once
                return ("T", i)
        tensors.append(obj)
        return ("T", len(tensors) - 1)
    if depth > 8:
        raise _NotDescribable()
    if isinstance(obj, (tuple, list)):
        return ("L", tuple(_describe(o, tensors, depth + 1) for o in obj))
    cls = type(obj)
    if not cls.__module__.startswith(_ROOT):  # a function, a user's object
        raise _NotDescribable()
    attrs = obj.__dict__
    items = tuple((name, _describe(attrs[name], tensors, depth + 1)) for name in sorted(attrs))
    return ("O", cls.__module__, cls.__qualname__, items)


def describe(mask: object, mod: object) -> tuple[str, list[Tensor]] | None:
    """``(spec, tensors)`` of ``mask`` and ``mod`` (either may be None), or None when one holds something
    that is neither a tensor, a plain value nor a qkv mask/mod (e.g. a function from ``masks.from_function``)."""
    tensors: list[Tensor] = []
    try:
        spec = repr((_describe(mask, tensors, 0), _describe(mod, tensors, 0)))
    except _NotDescribable:
        return None
    return spec, tensors


def _build(node: Any, tensors: list[Tensor]) -> Any:
    if not isinstance(node, tuple):
        return node
    tag = node[0]
    if tag == "T":
        return tensors[node[1]]
    if tag == "L":
        return tuple(_build(n, tensors) for n in node[1])
    _, module, qualname, items = node
    if not module.startswith(_ROOT):
        raise ValueError(f"spec names class {module}.{qualname}; only qkv's own masks and mods can be rebuilt")
    cls: Any = importlib.import_module(module)  # then the class named by qualname
    for part in qualname.split("."):
        cls = getattr(cls, part)
    obj = cls.__new__(cls)
    obj.__dict__.update({name: _build(val, tensors) for name, val in items})
    return obj


_PARSED: OrderedDict[str, tuple[Any, Any]] = OrderedDict()


def rebuild(spec: str, tensors: list[Tensor]) -> tuple[Any, Any]:
    """``(mask, mod)`` equal to the described ones, holding ``tensors``."""
    tree = _PARSED.get(spec)
    if tree is None:
        tree = _PARSED[spec] = ast.literal_eval(spec)
        while len(_PARSED) > 64:
            _PARSED.popitem(last=False)
    return _build(tree[0], tensors), _build(tree[1], tensors)


#: Tensors up to this many elements (lengths, ids, slopes) are keyed by value: a mask rebuilt each call from
#: equal values is the same object, so the tiled engine's plan cache (keyed by the objects) hits.
_BY_VALUE = 1 << 16
_REBUILT: OrderedDict[tuple[Any, ...], tuple[Any, Any]] = OrderedDict()


def _key(t: Tensor) -> tuple[Any, ...]:
    if t.numel() <= _BY_VALUE:
        return (
            t.dtype,
            tuple(t.shape),
            t.device.type,
            t.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes(),
        )
    return (id(t), t._version)


def cached_rebuild(spec: str, tensors: list[Tensor]) -> tuple[Any, Any]:
    """:func:`rebuild`, reusing the objects of an earlier call with equal small tensors (copies are kept, so a
    later in-place change of the caller's tensor cannot reach them) or the very same large ones."""
    key = (spec, tuple(_key(t) for t in tensors))
    hit = _REBUILT.get(key)
    if hit is not None:
        _REBUILT.move_to_end(key)
        return hit
    kept = [t.clone() if t.numel() <= _BY_VALUE else t for t in tensors]
    built = _REBUILT[key] = rebuild(spec, kept)
    while len(_REBUILT) > 8:
        _REBUILT.popitem(last=False)
    return built
