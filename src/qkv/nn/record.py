"""Recording named attention steps from inside a model (the hook mechanism the lens uses).

A model's attention modules have canonical names (``layers.3.attention``). While a
:class:`Recorder` is active (``with recording(rec): model(ids)``), every
:class:`qkv.nn.MultiHeadAttention` whose name the recorder wants computes its attention through
the reference steps and stores the tensors of the *actual* forward pass under
``{name}.{q,k,v,scores,scaled,weights,output}`` (TransformerLens-style hook points):

* ``q`` ``(B, Hq, Lq, D)``, ``k`` ``(B, Hkv, Lk, D)``, ``v`` ``(B, Hkv, Lk, Dv)`` -- after the
  projections (and RoPE, where the model uses it);
* ``scores``, ``scaled``, ``weights`` ``(B, Hq, Lq, Lk)``;
* ``output`` ``(B, Hq, Lq, Dv)`` -- per-head weighted sum of values, before the output projection.

Models may record more points (e.g. ``layers.3.input``, ``embeddings``). Without an active
recorder nothing is stored and the fast implementation runs.

Example:
    >>> import torch
    >>> from qkv.nn.record import Recorder, recording, current
    >>> rec = Recorder(["layers.0.attention.weights"])
    >>> with recording(rec):
    ...     current().wants("layers.0.attention.weights"), current().wants("layers.1.attention.weights")
    (True, False)
"""

from __future__ import annotations

import fnmatch
from contextlib import contextmanager
from typing import Iterable, Iterator

from torch import Tensor

from .hooks import STEP_NAMES, active, hooks, matches

__all__ = ["Recorder", "recording", "current", "STEP_NAMES"]


class Recorder:
    """Collects named tensors during a forward pass.

    Args:
        patterns: names or shell-style patterns (``"layers.*.attention.weights"``) to keep;
            ``None`` keeps everything.
        detach: store detached tensors (default) so recording never keeps the autograd graph alive.
    """

    def __init__(self, patterns: Iterable[str] | None = None, *, detach: bool = True):
        self.patterns = None if patterns is None else list(patterns)
        self.detach = detach
        self.store: dict[str, Tensor] = {}

    def wants(self, name: str) -> bool:
        """Whether ``name`` (or, for a prefix like ``layers.0.attention``, any step under it) is kept."""
        return matches(self.patterns, name, prefix=True)

    def apply(self, name: str, tensor: Tensor) -> None:
        """As a hook set (:mod:`qkv.nn.hooks`): record ``tensor``, never replace it."""
        self.record(name, tensor)

    def record(self, name: str, tensor: Tensor) -> None:
        """Store ``tensor`` under ``name`` if wanted (later records of one name overwrite)."""
        if self.patterns is None or any(fnmatch.fnmatchcase(name, p) for p in self.patterns):
            self.store[name] = tensor.detach() if self.detach else tensor

    def __getitem__(self, name: str) -> Tensor:
        try:
            return self.store[name]
        except KeyError:
            close = [n for n in self.store if n.split(".")[-1] == name.split(".")[-1]][:5]
            raise KeyError(f"nothing recorded under {name!r}; recorded e.g. {close or list(self.store)[:5]}") from None

    def __contains__(self, name: str) -> bool:
        return name in self.store

    def names(self) -> list[str]:
        return list(self.store)


@contextmanager
def recording(recorder: Recorder) -> Iterator[Recorder]:
    """Make ``recorder`` active for the ``with`` block (thread- and task-local): a read-only hook set
    (:func:`qkv.nn.hooks.hooks`), entered after the sets already active so it records what flows."""
    with hooks(recorder):
        yield recorder


def current() -> Recorder | None:
    """The innermost active recorder, or None."""
    return next((s for s in reversed(active()) if isinstance(s, Recorder)), None)
