"""Which tensors does a score mod compute with? Found by watching it run, wherever they are held.

A score mod may reach a learnable tensor through a closure, a module attribute or parameter, a bound
method, a dict, a list or a global. :func:`captured_tensors` calls the mod once on a small probe block
under a :class:`torch.overrides.TorchFunctionMode` and records every tensor that requires grad, enters a
torch function, and was not made during the call -- so engines that recompute scores tile by tile can
hand the gradient to exactly those tensors (the reference gets it from autograd).

Example:
    >>> import torch
    >>> table = torch.zeros(4, requires_grad=True)
    >>> holder = {"t": table}
    >>> mod = lambda s, b, h, q, kv: s + holder["t"][(q - kv).abs().clamp(max=3)]
    >>> [t is table for t in captured_tensors(mod, 1, 2, 5, 5, torch.float32, torch.device("cpu"))]
    [True]
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode
from torch.types import Device

from . import mods as _mods
from .walk import leaves

__all__ = ["captured_tensors"]


def _tensors(obj: object, out: list[Tensor], depth: int = 0) -> list[Tensor]:
    if isinstance(obj, Tensor):
        out.append(obj)
    elif depth < 4 and isinstance(obj, (list, tuple)):
        for o in obj:
            _tensors(o, out, depth + 1)
    elif depth < 4 and isinstance(obj, dict):
        for o in obj.values():
            _tensors(o, out, depth + 1)
    return out


class _Watch(TorchFunctionMode):
    """Records tensors that require grad and come from outside the watched call."""

    def __init__(self, inputs: list[Tensor]):
        super().__init__()
        self.made = list(inputs)  # kept alive so ids stay unique
        self.found: list[Tensor] = []

    def __torch_function__(
        self, func: Callable[..., Any], types: object, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        for t in _tensors(list(args) + list(kwargs.values()), []):
            if t.requires_grad and not any(t is m for m in self.made) and not any(t is f for f in self.found):
                self.found.append(t)
        out = func(*args, **kwargs)
        self.made.extend(_tensors(out, []))
        return out


def _held(mod: _mods.ScoreModLike) -> list[Tensor]:
    """Tensors requiring grad that the mods of a composition hold as attributes (a bias tensor), first-use order.

    What :func:`captured_tensors` answers under ``torch.compile``: there the probe cannot run, and a mod given as
    a Python function is traced into the graph (the reference engine), where autograd finds its tensors itself.
    """
    found: list[Tensor] = []
    for leaf in leaves(mod):
        for t in leaf.tensors():
            if t.requires_grad and not any(t is f for f in found):
                found.append(t)
    return found


def captured_tensors(
    mod: _mods.ScoreModLike, B: int, H: int, lq: int, lk: int, dtype: torch.dtype, device: Device
) -> list[Tensor]:
    """Tensors requiring grad that ``mod`` computes with (in first-use order); empty for None or an empty problem.

    The mod runs once on a ``(B, H, 1, 1)`` block at query 0, key 0 of an ``lq x lk`` problem.

    Raises:
        ValueError: the mod fails on the probe block (the message names the mod and the error).
    """
    mod = _mods.as_mod(mod)
    if mod is None or lq == 0 or lk == 0:  # an empty problem computes no score: no gradient to pass on
        return []
    if torch.compiler.is_compiling():  # no probe in traced code: the tensors the mods hold themselves
        return _held(mod)
    score = torch.zeros(B, H, 1, 1, dtype=dtype, device=device)
    b = torch.arange(B, device=device).view(B, 1, 1, 1)
    h = torch.arange(H, device=device).view(1, H, 1, 1)
    zero = torch.zeros(1, 1, 1, 1, dtype=torch.long, device=device)
    watch = _Watch([score, b, h, zero])
    try:
        with torch.no_grad(), watch:
            _mods.apply(mod, score, b, h, zero, zero, lq, lk)
    except ValueError:
        raise
    except Exception as e:  # a user's function failed: say which, on what
        raise ValueError(
            f"score_mod {mod!r} failed on a ({B}, {H}, 1, 1) score block with index tensors b, h, "
            f"q_idx, kv_idx: {type(e).__name__}: {e}; a score mod must work on any block of the "
            "score matrix (use the index tensors, not fixed shapes)"
        ) from e
    return watch.found
