"""Hook points that can read *and write*: named tensors inside the real forward pass.

Every attention call of a qkv model (and of a transformers model run through :mod:`qkv.hf`) passes its
tensors through named points ``{layer}.{q,k,v,scores,scaled,weights,output}``; models add their own
(``embeddings``, ``layers.{i}.input``, ``layers.{i}.output``, ``final``). A hook set active in a ``with``
block sees each point its patterns match and may replace the tensor for the rest of the forward pass::

    q ──▶ point(q) ─┐
    k ──▶ point(k) ─┼─▶ scores ─▶ point ─▶ scaled ─▶ point ─▶ (mod, mask, softmax) ─▶ weights ─▶ point
    v ──▶ point(v) ─┘                                                   output = weights·v ─▶ point ─▶ W_O

A hook is ``fn(tensor, name) -> Tensor | None``: ``None`` observes, a tensor of the same shape replaces.
Hook sets apply in the order they were entered (outer first), so a recorder entered *inside* an
intervention records what actually flowed. Nothing stays installed after the ``with`` block, also when it
raises. With no hook set active a point costs one context-variable read and the fast attention runs.

Shapes: q ``(B, Hq, Lq, D)``, k ``(B, Hkv, Lk, D)``, v ``(B, Hkv, Lk, Dv)``, scores/scaled/weights
``(B, Hq, Lq, Lk)`` (compute dtype: fp32 for fp16/bf16), output ``(B, Hq, Lq, Dv)`` (per head, before the
output projection).

Example:
    >>> import torch
    >>> from qkv.nn import Hooks, MultiHeadAttention, hooks
    >>> mha = MultiHeadAttention(8, 2, name="layers.0.attention")
    >>> x = torch.randn(1, 3, 8)
    >>> def zero_head_1(t, name):
    ...     t = t.clone(); t[:, 1] = 0; return t
    >>> with hooks(Hooks().add("layers.0.attention.output", zero_head_1)):
    ...     y = mha(x)
    >>> out_in = mha.attend(*mha._project_qkv(x)).transpose(1, 2).reshape(1, 3, 8)  # (B, L, Hq*D)
    >>> out_in[..., 4:] = 0                                                         # head 1's columns
    >>> torch.allclose(y, mha.out_proj(out_in), atol=1e-6)
    True
"""

from __future__ import annotations

import contextvars
import fnmatch
from contextlib import contextmanager
from typing import Callable, Iterator, Protocol

from torch import Tensor

__all__ = ["STEP_NAMES", "HookFn", "HookSet", "Hooks", "hooks", "active", "point", "wants", "wants_any"]

#: The attention steps every attention call exposes, in the order they happen.
STEP_NAMES = ("q", "k", "v", "scores", "scaled", "weights", "output")

#: ``fn(tensor, name) -> replacement or None``.
HookFn = Callable[[Tensor, str], "Tensor | None"]


class HookSet(Protocol):
    """What an active hook set provides (:class:`Hooks`, :class:`qkv.nn.record.Recorder`)."""

    def wants(self, name: str) -> bool:
        """Whether ``name`` -- or, for an attention prefix like ``layers.0.attention``, any step under it --
        is seen by this set."""

    def apply(self, name: str, tensor: Tensor) -> Tensor | None:
        """Observe ``tensor`` at point ``name``; return a replacement or None."""


_ACTIVE: contextvars.ContextVar[tuple[HookSet, ...]] = contextvars.ContextVar("qkv_hooks", default=())


def matches(patterns: list[str] | None, name: str, *, prefix: bool = False) -> bool:
    """Whether ``name`` matches a shell-style pattern (``None``: everything); with ``prefix``, also any
    ``name.step`` for the attention steps."""
    if patterns is None:
        return True
    names = [name, *(f"{name}.{s}" for s in STEP_NAMES)] if prefix else [name]
    return any(fnmatch.fnmatchcase(n, p) for n in names for p in patterns)


class Hooks:
    """An ordered set of ``(pattern, fn)`` hooks; entries run in the order they were added.

    Example:
        >>> h = Hooks().add("layers.*.attention.weights", lambda t, name: None)
        >>> h.wants("layers.3.attention"), h.wants("layers.3.attention.weights"), h.wants("embeddings")
        (True, True, False)
    """

    def __init__(self) -> None:
        self.entries: list[tuple[str, HookFn]] = []

    def add(self, pattern: str, fn: HookFn) -> Hooks:
        """Add ``fn`` at every point matching ``pattern`` (a name or shell-style pattern); returns ``self``."""
        if not isinstance(pattern, str) or not pattern:
            raise ValueError(f"a hook pattern is a point name such as 'layers.0.attention.output', got {pattern!r}")
        if not callable(fn):
            raise ValueError(f"a hook is a callable fn(tensor, name) -> Tensor | None, got {type(fn).__name__}")
        self.entries.append((pattern, fn))
        return self

    def wants(self, name: str) -> bool:
        return any(matches([p], name, prefix=True) for p, _ in self.entries)

    def apply(self, name: str, tensor: Tensor) -> Tensor | None:
        out = None
        for pattern, fn in self.entries:
            if fnmatch.fnmatchcase(name, pattern):
                got = fn(tensor if out is None else out, name)
                if got is not None:
                    out = _checked(got, tensor, name)
        return out


def _checked(new, old: Tensor, name: str) -> Tensor:
    if not isinstance(new, Tensor):
        raise ValueError(f"a hook at {name} returned {type(new).__name__}; return a Tensor (to replace) or None")
    if new.shape != old.shape:
        raise ValueError(
            f"a hook at {name} returned shape {tuple(new.shape)} but the point holds {tuple(old.shape)}; "
            "a replacement must keep the shape (edit a clone of the tensor it receives)"
        )
    return new.to(device=old.device, dtype=old.dtype)


@contextmanager
def hooks(*sets: HookSet) -> Iterator[tuple[HookSet, ...]]:
    """Make hook sets active for the ``with`` block (thread- and task-local), after those already active."""
    global _OPEN
    token = _ACTIVE.set(_ACTIVE.get() + sets)
    _OPEN += 1
    try:
        yield sets
    finally:
        _OPEN -= 1
        _ACTIVE.reset(token)


#: ``hooks()`` blocks open in any thread: while 0 no context variable is read -- torch.compile cannot trace a
#: ContextVar read (a graph break), but it traces this int (and recompiles if a block opens later).
_OPEN = 0


def _sets() -> tuple[HookSet, ...]:
    return _ACTIVE.get() if _OPEN else ()


def active() -> tuple[HookSet, ...]:
    """The active hook sets, outermost first (empty when none)."""
    return _sets()


def wants(name: str) -> bool:
    """Whether an active hook set sees ``name`` (or a step under the attention prefix ``name``)."""
    return any(s.wants(name) for s in _sets())


def wants_any(names: list[str]) -> bool:
    """Whether an active hook set sees any of ``names``."""
    sets = _sets()
    return bool(sets) and any(s.wants(n) for s in sets for n in names)


def point(name: str, tensor: Tensor) -> Tensor:
    """Pass ``tensor`` through the hook point ``name``: every active set in order; returns what flows on."""
    for s in _sets():
        got = s.apply(name, tensor)
        if got is not None:
            tensor = _checked(got, tensor, name)
    return tensor
