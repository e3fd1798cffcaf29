"""Attention implementations, selected by name, all with one explicit signature.

Each implementation says which inputs it cannot honour, as human-readable reasons
(:meth:`Implementation.not_supported_reasons`). ``impl="auto"`` takes the preferred implementation
among those with no reasons; a forced choice that cannot run raises with every reason. Nothing
ever falls back silently.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import Tensor

from .inputs import AttentionInputs

__all__ = ["Implementation", "register", "get", "implementations", "select"]


@dataclass(frozen=True)
class Implementation:
    """One way to compute attention.

    Attributes:
        name: the ``impl=`` string.
        forward: ``fn(inputs) -> (out (B, Hq, Lq, Dv), lse (B, Hq, Lq) float32)``; differentiable.
        not_supported: ``fn(inputs) -> list[str]``; empty when the inputs are supported.
        priority: ``fn(inputs) -> float``; ``auto`` picks the lowest among supported implementations
            (set from benchmark measurements, see ``bench/``).
        description: one line for ``qkv.implementations()``.
    """

    name: str
    forward: Callable[[AttentionInputs], tuple[Tensor, Tensor]]
    not_supported: Callable[[AttentionInputs], list[str]]
    priority: Callable[[AttentionInputs], float]
    description: str = ""

    def not_supported_reasons(self, inp: AttentionInputs) -> list[str]:
        return list(self.not_supported(inp))


_REGISTRY: dict[str, Implementation] = {}


def register(impl: Implementation) -> Implementation:
    """Add (or replace) an implementation under ``impl.name``."""
    if impl.name == "auto":
        raise ValueError("'auto' is reserved for automatic selection; choose another name")
    _REGISTRY[impl.name] = impl
    return impl


def get(name: str) -> Implementation:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown impl {name!r}; known: {', '.join(['auto', *_REGISTRY])}") from None


def implementations() -> dict[str, str]:
    """``{name: description}`` of every registered implementation (``auto`` chooses among them)."""
    return {name: impl.description for name, impl in _REGISTRY.items()}


def select(name: str, inp: AttentionInputs) -> Implementation:
    """The implementation to run: ``name`` itself (if it supports ``inp``), or for ``"auto"`` the
    lowest-priority supported one. Raises ``ValueError`` listing every reason otherwise."""
    if not isinstance(name, str):
        raise ValueError(f"impl must be a string, got {type(name).__name__}; known: {', '.join(['auto', *_REGISTRY])}")
    if name != "auto":
        impl = get(name)
        reasons = impl.not_supported_reasons(inp)
        if reasons:
            raise ValueError(f"impl={name!r} cannot run these inputs: " + "; ".join(reasons)
                             + ". Use impl='auto' or another implementation.")
        return impl
    ranked = sorted(_REGISTRY.values(), key=lambda i: i.priority(inp))
    why = {}
    for impl in ranked:
        reasons = impl.not_supported_reasons(inp)
        if not reasons:
            return impl
        why[impl.name] = reasons
    raise ValueError("no implementation supports these inputs: "
                     + "; ".join(f"{n}: {', '.join(r)}" for n, r in why.items()))
