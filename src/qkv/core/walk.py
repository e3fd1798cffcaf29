"""One walker over compositions of masks and score mods, and their fingerprints.

Masks (:class:`qkv.masks.Mask`) and score mods (:class:`qkv.mods.ScoreMod`) describe their structure with a
``children`` tuple; this module is the only place that walks it.

Example:
    >>> from qkv import masks
    >>> m = masks.causal() & masks.sliding_window(4)
    >>> [type(x).__name__ for x in walk(m)]
    ['_Combined', '_Diagonal', '_Diagonal']
    >>> all(leaf.translation_invariant for leaf in leaves(m))
    True
"""

from __future__ import annotations

from typing import Any, Iterator

from torch import Tensor

__all__ = ["walk", "leaves", "fingerprint_of"]


def walk(node: Any) -> Iterator[Any]:
    """``node`` and every node below it (depth first, parents before children); nothing for None."""
    if node is None:
        return
    yield node
    for child in getattr(node, "children", ()):
        yield from walk(child)


def leaves(node: Any) -> Iterator[Any]:
    """The nodes of :func:`walk` that have no children."""
    return (n for n in walk(node) if not getattr(n, "children", ()))


def fingerprint_of(obj: object, depth: int = 0) -> object:
    """Identity and version of every tensor an object holds (an in-place change gives a new key), or None
    when its behaviour cannot be fingerprinted (a function, an inference-mode tensor, unknown objects).

    Masks and mods call this on themselves (their ``fingerprint()``); plain values are returned as they are.
    """
    if obj is None or isinstance(obj, (int, float, str, bool)):
        return obj
    if isinstance(obj, Tensor):
        # inference tensors have no version counter: they cannot be fingerprinted, so no caching
        return None if obj.is_inference() else (id(obj), obj._version)
    if isinstance(obj, (list, tuple)):
        parts = tuple(_fp(o, depth + 1) for o in obj)
        return None if any(p is None and o is not None for p, o in zip(parts, obj)) else parts
    if depth > 0 or callable(obj) and not hasattr(obj, "fingerprint"):
        return None
    items = []
    for name, val in sorted(vars(obj).items()):
        fp = _fp(val, depth + 1)
        if fp is None and val is not None:
            return None
        items.append((name, fp))
    return (id(obj), type(obj).__name__, tuple(items))


def _fp(val: Any, depth: int) -> object:
    """A nested value's key: masks and mods answer for themselves, everything else as in fingerprint_of."""
    if depth > 6:
        return None
    if hasattr(val, "fingerprint") and not isinstance(val, type):
        return val.fingerprint()
    return fingerprint_of(val, depth)
