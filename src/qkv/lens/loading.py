"""Which model a trace runs: loading by name or path (cached per process) and the adapter the lens reads it by.

:func:`load_model` returns a native qkv model (:func:`qkv.models.load`) or, for a transformers model or a
checkpoint of a family qkv does not re-implement, a :class:`qkv.hf.HFModel` (the "qkv" attention backend;
transformers is imported only then). :func:`adapt` wraps either in its :class:`qkv.lens.adapters.ModelAdapter`;
:func:`model_info`, :func:`max_positions` and :func:`count_tokens` read any model through it.

Sizes as in :class:`qkv.lens.trace.Trace`: ``num_layers`` N, ``num_heads`` H, ``num_kv_heads`` Hkv, ``head_dim`` D.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from .adapters import ModelAdapter, NativeAdapter

__all__ = ["load_model", "adapt", "model_name", "model_info", "max_positions", "count_tokens"]

_MODELS: dict[str, Any] = {}


def load_model(model: Any = "minilm"):
    """A loaded model: ``model`` itself if it is one, else ``qkv.models.load(model)`` (cached per name).

    A transformers model, or a directory / cached hub id of a family qkv does not re-implement, loads
    through :mod:`qkv.hf` (the "qkv" attention backend; transformers is imported only then).
    """
    if isinstance(model, ModelAdapter):
        return model.loaded
    if not isinstance(model, str):
        if _is_transformers(model):
            from .hf_adapter import as_hf_model

            return as_hf_model(model)
        if not (hasattr(model, "layers") and hasattr(model, "tokenizer") and hasattr(model, "config")):
            raise ValueError(
                f"model must be a name/path, a qkv model with .layers, .tokenizer and .config, or a "
                f"transformers PreTrainedModel, got {type(model).__name__}"
            )
        return model
    if not model.strip():
        raise ValueError("model name is empty; use e.g. 'minilm' or a checkpoint directory")
    if model not in _MODELS:
        from ..models import load
        from ..models.loading import FAMILIES, resolve

        kind = _model_type(resolve(model))
        if kind is None or kind in FAMILIES or model == "minilm":  # a damaged config: the native loader says why
            _MODELS[model] = load(model)
        else:  # a well-formed config of a family qkv does not re-implement
            from ..hf import load as hf_load

            _MODELS[model] = hf_load(model)
    return _MODELS[model]


def _is_transformers(model: Any) -> bool:
    """A transformers ``PreTrainedModel`` or a :class:`qkv.hf.HFModel` (checked without importing transformers:
    neither can exist unless it was imported)."""
    tf, hf = sys.modules.get("transformers"), sys.modules.get("qkv.hf")
    return (tf is not None and isinstance(model, getattr(tf, "PreTrainedModel", ()))) or (
        hf is not None and isinstance(model, hf.HFModel)
    )


def adapt(model: Any = "minilm", given: Any = None, *, tokenizer: Any = None) -> ModelAdapter:
    """The :class:`ModelAdapter` of ``model`` (anything :func:`load_model` takes, or an adapter).

    Args:
        model: a name/path, a loaded model or an adapter.
        given: what the caller passed to load it (the name a trace shows); default ``model`` when a string.
        tokenizer: a transformers tokenizer for a transformers model (default: the one loaded with it).
    """
    if isinstance(model, ModelAdapter) and tokenizer is None:
        return model
    given = model if given is None and isinstance(model, str) else given
    m = load_model(model)
    if _is_transformers(m):
        from .hf_adapter import TransformersAdapter, as_hf_model

        return TransformersAdapter(as_hf_model(m, tokenizer))
    if tokenizer is not None:
        raise ValueError(f"tokenizer= goes with a transformers model; {type(m).__name__} brings its own tokenizer")
    return NativeAdapter(m, model_name(m, given))


def model_name(m, given: Any = None) -> str:
    """The name a trace shows for loaded model ``m`` (``given``: what the caller passed to load it)."""
    return getattr(m, "name", None) or getattr(m.config, "name", None) or (given if isinstance(given, str) else "model")


def model_info(m, given: Any = None) -> dict:
    """The ``model`` dict of loaded model ``m`` (name, type, sizes): what its traces carry and what
    ``qkv serve`` reports (:meth:`ModelAdapter.info`)."""
    return adapt(m, given).info()


def max_positions(m) -> int | None:
    """The most tokens loaded model ``m`` accepts (None when a transformers config does not say)."""
    return adapt(m).max_positions


def count_tokens(m, text: str) -> int | None:
    """How many tokens of ``text`` loaded model ``m`` reads (cut at its limit, as ``truncate=True`` traces);
    None when it has no tokenizer."""
    return adapt(m).count_tokens(text)


def _model_type(directory) -> str | None:
    try:
        raw = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # the native loader then says what is wrong with the directory
    return raw.get("model_type") if isinstance(raw, dict) else None
