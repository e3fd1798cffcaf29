"""The ``"qkv"`` attention function for ``transformers.AttentionInterface`` and the recording bridge.

transformers calls ``fn(module, query, key, value, attention_mask, scaling=, dropout=, sliding_window=,
softcap=, ...)`` with query ``(B, Hq, Lq, D)``, key/value ``(B, Hkv, Lk, D)`` (not repeated for GQA)
and expects ``(attn_output (B, Lq, Hq, Dv), attn_weights (B, Hq, Lq, Lk) or None)``.

:func:`attention_forward` maps that onto :func:`qkv.attention`: ``scaling`` -> ``scale``, ``softcap`` ->
``qkv.mods.softcap``, ``dropout`` -> ``dropout_p`` (transformers passes 0 outside training), the mask
(a :class:`qkv.masks.Mask` from :func:`qkv.hf.masks.mask_interface`, or a dense tensor -> exact
structure via :func:`qkv.hf.masks.recover`) -> ``mask``; GQA runs natively (K/V never repeated).
Every call passes through the hook points ``layers.{i}.attention.{q,k,v,scores,scaled,weights,output}``
(:mod:`qkv.nn.hooks`, through :func:`qkv.nn.hooked.attend` as in qkv's own models): a recorder reads them, a
hook may replace them. Weights are computed only when transformers collects ``attentions`` or a hook
sees a score-shaped step.
"""

from __future__ import annotations

import contextvars
from contextlib import contextmanager
from typing import Any, Iterator

import torch
from torch import Tensor

from .. import masks as qmasks
from .. import mods as qmods
from ..nn.hooked import attend
from ..nn.hooks import active
from .masks import recover

__all__ = ["attention_forward", "layer_order", "IMPL"]

#: ``impl=`` passed to :func:`qkv.attention` (``"auto"``: the dispatcher picks sdpa / tiled / reference).
IMPL = "auto"

_ORDER: contextvars.ContextVar[dict | None] = contextvars.ContextVar("qkv_hf_layer_order", default=None)


@contextmanager
def layer_order() -> Iterator[dict]:
    """While active, attention modules without ``layer_idx`` are numbered by the order of their first
    call, and the yielded dict maps each recorded layer index to its attention module."""
    state: dict[str, dict[Any, Any]] = {"order": {}, "modules": {}}
    token = _ORDER.set(state)
    try:
        yield state["modules"]
    finally:
        _ORDER.reset(token)


def _layer_index(module) -> int:
    state = _ORDER.get()
    idx = getattr(module, "layer_idx", None)
    if not isinstance(idx, int):
        if state is None:
            raise ValueError(
                f"qkv.hf: {type(module).__name__} has no integer layer_idx, so its recording name "
                "layers.{i}.attention is unknown; record through qkv.trace (which numbers layers by "
                "call order) or set module.layer_idx"
            )
        idx = state["order"].setdefault(id(module), len(state["order"]))
    if state is not None:
        state["modules"].setdefault(idx, module)
    return idx


_WARNED_NO_COLLECTOR = False


def _wants_attentions() -> bool:
    """Whether transformers is collecting ``attentions`` for this forward (``output_attentions=True``).

    Read from transformers' private ``output_capturing._active_collector``; where a transformers version lacks
    it, every call computes its weights (the slower ``qkv.steps`` path) and a warning says so, once.
    """
    global _WARNED_NO_COLLECTOR
    try:
        from transformers.utils.output_capturing import _active_collector
    except ImportError as e:  # other transformers layouts: be safe, return weights, and say what it costs
        if not _WARNED_NO_COLLECTOR:
            _WARNED_NO_COLLECTOR = True
            import warnings

            import transformers

            warnings.warn(
                f"qkv.hf: transformers {transformers.__version__} has no "
                f"transformers.utils.output_capturing._active_collector ({e}), so the qkv backend cannot tell "
                "whether output_attentions=True was asked for: every attention call now computes and returns "
                "its weights through qkv.steps, the slower path, instead of the fused qkv.attention; use a "
                "tested transformers version (qkv.hf.TESTED_TRANSFORMERS) for full speed",
                RuntimeWarning,
                stacklevel=2,
            )
        return True
    collected = _active_collector.get()
    return bool(collected) and "attentions" in collected


def _mask_and_bias(attention_mask, module, lq: int, lk: int, is_causal, sliding_window):
    """``(qkv mask, additive bias or None)`` for whatever transformers passed as ``attention_mask``."""
    if isinstance(attention_mask, qmasks.Mask):
        return attention_mask, None
    if attention_mask is None:
        causal = is_causal if is_causal is not None else getattr(module, "is_causal", False)
        if not causal or lq == 1:
            return None, None
        if sliding_window:  # as flash/sdpa without a mask: top-left causal window of `sliding_window` keys
            return qmasks.sliding_window(int(sliding_window) - 1, 0, align="top_left"), None
        return qmasks.causal(align="top_left"), None
    if not isinstance(attention_mask, Tensor):
        raise ValueError(
            f"qkv backend: attention_mask must be a qkv mask, a tensor or None, got "
            f"{type(attention_mask).__name__} (a flex BlockMask needs "
            "attn_implementation='flex_attention')"
        )
    t = attention_mask[..., :lk]
    if t.dtype.is_floating_point:
        blocked = t <= torch.finfo(t.dtype).min / 2
        if not bool(((t == 0) | blocked).all()):  # a real additive bias (e.g. ALiBi in the mask)
            return qmasks.from_tensor(~blocked), qmods.bias(t.masked_fill(blocked, 0.0))
    return recover(t, lq, lk), None


def attention_forward(
    module: torch.nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask,
    scaling: float | None = None,
    dropout: float = 0.0,
    softcap: float | None = None,
    sliding_window: int | None = None,
    is_causal: bool | None = None,
    **kwargs,
):
    """transformers' attention-function signature, computed by :func:`qkv.attention`.

    Args:
        module: the model's attention module (``layer_idx`` names the recording).
        query: ``(B, Hq, Lq, D)``; key, value: ``(B, Hkv, Lk, D|Dv)``.
        attention_mask: a :class:`qkv.masks.Mask` (from the "qkv" mask interface), a bool / additive float
            tensor ``(B|1, 1|Hq, Lq, >= Lk)`` or None.
        scaling: factor on ``q @ k^T`` (None: ``1/sqrt(D)``); dropout: on the weights (training only).
        softcap: Gemma 2 logit soft-capping ``cap * tanh(s / cap)`` on the scaled scores.
        sliding_window: used only when no mask arrives (the mask carries the window otherwise).

    Returns:
        ``(out (B, Lq, Hq, Dv), weights (B, Hq, Lq, Lk) or None)``.
    """
    lq, lk = query.shape[2], key.shape[2]
    mask, bias = _mask_and_bias(attention_mask, module, lq, lk, is_causal, sliding_window)
    mods = [m for m in (qmods.softcap(float(softcap)) if softcap else None, bias) if m is not None]
    score_mod = None if not mods else mods[0] if len(mods) == 1 else mods
    scale = None if scaling is None else float(scaling)
    name = f"layers.{_layer_index(module)}.attention" if active() else ""  # no hook set: attend runs the fast path
    p = float(dropout) if module.training else 0.0
    out, weights = attend(
        name,
        query,
        key,
        value,
        mask=mask,
        score_mod=score_mod,
        scale=scale,
        dropout_p=p,
        impl=IMPL,
        need_weights=_wants_attentions(),
    )
    if weights is not None:
        weights = weights.to(query.dtype)
    return out.transpose(1, 2).contiguous(), weights
