"""Attention implementations, selected by name, all with one explicit signature.

Each implementation *declares* what it supports (:class:`Supports`: devices, dtypes, masks, score mods
and their gradients, lse, dropout, GQA, ``Dv != D``, empty problems); the human-readable reasons why it
cannot run some inputs are derived from those declarations (:func:`not_supported_reasons`).
``impl="auto"`` takes the cheapest implementation (lowest cost on the inputs' device) among those
with no reasons; a forced choice that cannot run raises with every reason. Nothing ever falls back
silently. The table of implementations and the measurements behind their priorities live in
:mod:`qkv.core.engines`.
"""

from __future__ import annotations

import warnings
from dataclasses import InitVar, dataclass, field
from typing import Callable

import torch
from torch import Tensor

from .inputs import AttentionInputs

__all__ = [
    "Supports",
    "Implementation",
    "register",
    "get",
    "implementations",
    "select",
    "not_supported_reasons",
    "ALL_DTYPES",
]

ALL_DTYPES = frozenset({torch.float16, torch.bfloat16, torch.float32, torch.float64})


@dataclass(frozen=True)
class Supports:
    """What an implementation can honour.

    Attributes:
        devices: device types (``"cpu"``, ``"cuda"``).
        dtypes: input dtypes.
        masks: None for every mask, else ``fn(inputs) -> reason | None`` saying why a mask cannot be taken.
        score_mods: any score mod; mod_gradients: gradients into tensors a score mod computes with.
        lse: returns the log-sum-exp (``return_lse=True``).
        dropout: ``dropout_p > 0``; dropout_generator: a ``torch.Generator`` for it.
        gqa: ``Hq != Hkv``; value_dim: ``Dv != D``; empty: ``Lq == 0`` or ``Lk == 0``.
        hint: the implementation to suggest when this one declines.
    """

    devices: frozenset = frozenset({"cpu", "cuda"})
    dtypes: frozenset = ALL_DTYPES
    masks: Callable[[AttentionInputs], str | None] | None = None
    score_mods: bool = True
    mod_gradients: bool = True
    lse: bool = True
    dropout: bool = True
    dropout_generator: bool = True
    gqa: bool = True
    value_dim: bool = True
    empty: bool = True
    hint: str = "impl='reference'"


def not_supported_reasons(s: Supports, inp: AttentionInputs) -> list[str]:
    """Why inputs ``inp`` fall outside the declaration ``s`` (empty list: supported)."""
    why, use = [], s.hint
    if inp.device_type not in s.devices:
        why.append(f"device {inp.device_type!r} is not one of {sorted(s.devices)}; use {use}")
    if inp.dtype not in s.dtypes:
        why.append(f"dtype {inp.dtype} is not supported; use {use}")
    if (inp.Lq == 0 or inp.Lk == 0) and not s.empty:
        why.append(f"empty problem (Lq={inp.Lq}, Lk={inp.Lk}) is not supported; use {use}")
    elif inp.mask is not None and s.masks is not None:
        reason = s.masks(inp)
        if reason:
            why.append(reason)
    if inp.score_mod is not None and not s.score_mods:
        why.append(f"no score mods (ALiBi, softcap, bias...); use {use}")
    elif inp.mod_tensors and inp.needs_grad and not s.mod_gradients:
        why.append(f"no gradients for tensors the score mod uses; use {use}")
    if inp.return_lse and not s.lse:
        why.append(f"does not return the log-sum-exp (return_lse=True); use {use}")
    if inp.dropout_p > 0 and not s.dropout:
        why.append(f"dropout_p={inp.dropout_p} is not supported; use {use}")
    elif inp.dropout_p > 0 and inp.generator is not None and not s.dropout_generator:
        why.append(
            "cannot take a dropout generator (draws from the global RNG); use impl='reference' for reproducible dropout"
        )
    if inp.groups > 1 and not s.gqa:
        why.append(f"no GQA/MQA (Hq={inp.Hq}, Hkv={inp.Hkv}); use {use}")
    if inp.Dv != inp.D and not s.value_dim:
        why.append(f"v has head_dim {inp.Dv} != {inp.D} of q/k; use {use}")
    return why


@dataclass(frozen=True)
class Implementation:
    """One way to compute attention.

    Attributes:
        name: the ``impl=`` string.
        forward: ``fn(inputs) -> (out (B, Hq, Lq, Dv), lse (B, Hq, Lq) or None)``; differentiable. ``lse`` is
            float32 (float64 for float64 inputs); None only when ``supports.lse`` is False.
        supports: what it can honour (the reasons come from here).
        cost: ``{device type: fn(inputs) -> float}``, a relative cost from measurement: ``auto`` picks the
            lowest among supported ones. A device without its own entry uses ``"cpu"``'s costs.
        description: one line for ``qkv.implementations()``.
        extra_reasons: ``fn(inputs) -> list[str]`` for limits a declaration cannot express (rarely needed).
        priority: deprecated alias of ``cost`` (the lower value always won: it is a cost).
    """

    name: str
    forward: Callable[[AttentionInputs], tuple[Tensor, Tensor | None]]
    supports: Supports
    cost: dict = field(default_factory=dict)
    description: str = ""
    extra_reasons: Callable[[AttentionInputs], list[str]] | None = None
    priority: InitVar[dict | None] = None

    def __post_init__(self, priority):
        if priority is not None:
            warnings.warn(
                "Implementation(priority=...) is deprecated: the lowest value wins, so it is a cost; "
                "pass cost=... instead",
                DeprecationWarning,
                stacklevel=3,
            )
            object.__setattr__(self, "cost", dict(self.cost, **priority))

    def not_supported_reasons(self, inp: AttentionInputs) -> list[str]:
        why = not_supported_reasons(self.supports, inp)
        return why + (list(self.extra_reasons(inp)) if self.extra_reasons else [])

    def rank(self, inp: AttentionInputs) -> float:
        """The cost of running ``inp`` here (``inf`` without a cost for the device or for ``"cpu"``)."""
        fn = self.cost.get(inp.device_type) or self.cost.get("cpu")
        return float("inf") if fn is None else fn(inp)


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
    cheapest supported one. Raises ``ValueError`` listing every reason otherwise."""
    if not isinstance(name, str):
        raise ValueError(f"impl must be a string, got {type(name).__name__}; known: {', '.join(['auto', *_REGISTRY])}")
    if name != "auto":
        impl = get(name)
        reasons = impl.not_supported_reasons(inp)
        if reasons:
            raise ValueError(
                f"impl={name!r} cannot run these inputs: "
                + "; ".join(reasons)
                + ". Use impl='auto' or another implementation."
            )
        return impl
    why = {}
    for impl in sorted(_REGISTRY.values(), key=lambda i: i.rank(inp)):
        reasons = impl.not_supported_reasons(inp)
        if not reasons:
            return impl
        why[impl.name] = reasons
    raise ValueError(
        "no implementation supports these inputs: " + "; ".join(f"{n}: {', '.join(r)}" for n, r in why.items())
    )
