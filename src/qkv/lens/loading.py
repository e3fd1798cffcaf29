"""Which model a trace runs: loading by name or path (cached per process) and what a trace says about it.

:func:`load_model` returns a native qkv model (:func:`qkv.models.load`) or, for a transformers model or a
checkpoint of a family qkv does not re-implement, a :class:`qkv.hf.HFModel` (the "qkv" attention backend;
transformers is imported only then). :func:`model_info`, :func:`max_positions` and :func:`count_tokens` read
either kind the same way for :mod:`qkv.lens.trace` and ``qkv serve``. Re-exported by :mod:`qkv.lens.trace`.

Sizes as in :class:`qkv.lens.trace.Trace`: ``num_layers`` N, ``num_heads`` H, ``num_kv_heads`` Hkv, ``head_dim`` D.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["load_model", "model_name", "model_info", "max_positions", "count_tokens"]

_MODELS: dict[str, Any] = {}


def load_model(model: Any = "minilm"):
    """A loaded model: ``model`` itself if it is one, else ``qkv.models.load(model)`` (cached per name).

    A transformers model, or a directory / cached hub id of a family qkv does not re-implement, loads
    through :mod:`qkv.hf` (the "qkv" attention backend; transformers is imported only then).
    """
    if not isinstance(model, str):
        from .hf_trace import as_hf_model, is_transformers_model

        if is_transformers_model(model) or type(model).__name__ == "HFModel":
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


def model_name(m, given: Any = None) -> str:
    """The name a trace shows for loaded model ``m`` (``given``: what the caller passed to load it)."""
    return getattr(m, "name", None) or getattr(m.config, "name", None) or (given if isinstance(given, str) else "model")


def model_info(m, given: Any = None) -> dict:
    """The ``model`` dict of loaded model ``m`` (name, type, sizes): what a trace of a native model carries
    and what ``qkv serve`` reports; a transformers model's sizes come from its config
    (:func:`qkv.lens.hf_trace.config_info`)."""
    if type(m).__name__ == "HFModel":
        from .hf_trace import config_info

        return {"name": model_name(m, given), **config_info(m.config)}
    cfg = m.config
    return {
        "name": model_name(m, given),
        "model_type": cfg.model_type,
        "num_layers": cfg.num_layers,
        "num_heads": cfg.num_heads,
        "num_kv_heads": cfg.num_kv_heads,
        "head_dim": cfg.head_dim,
    }


def max_positions(m) -> int | None:
    """The most tokens loaded model ``m`` accepts (None when a transformers config does not say)."""
    if type(m).__name__ == "HFModel":
        from .hf_trace import position_limit

        return position_limit(m.config)
    return m.config.max_positions


def count_tokens(m, text: str) -> int | None:
    """How many tokens of ``text`` loaded model ``m`` reads (cut at its limit, as ``truncate=True`` traces);
    None when it has no tokenizer."""
    if type(m).__name__ == "HFModel":
        from .hf_trace import count_tokens as hf_count_tokens

        return hf_count_tokens(m, text)
    return None if m.tokenizer is None else len(m.tokenizer.encode(text, truncate=True).ids)


def _model_type(directory) -> str | None:
    try:
        raw = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # the native loader then says what is wrong with the directory
    return raw.get("model_type") if isinstance(raw, dict) else None
