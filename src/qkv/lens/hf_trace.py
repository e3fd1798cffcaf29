"""Tracing a Hugging Face transformers model through the ``"qkv"`` attention backend.

``qkv.trace(text, model=M, tokenizer=T)`` with a loaded ``PreTrainedModel``, or ``model="dir"`` / a
cached hub id of a family qkv does not re-implement, lands here. The model runs once with its
attention implementation set to ``"qkv"`` (:mod:`qkv.hf`) under a :class:`qkv.nn.record.Recorder`;
the backend records ``layers.{i}.attention.{q,k,v,scores,scaled,weights,output}`` of the actual
forward pass -- no model code is patched. ``||f_h(v_j)||`` uses the layer's output projection when it
is found (``o_proj``, ``out_proj``, ``dense``, GPT-2's ``c_proj``, BERT's ``output.dense``), else ones.

Shapes as in :class:`qkv.lens.trace.Trace`: q ``(N, H, L, D)``, k/v ``(N, Hkv, L, D)``, weights ``(N, H, L, L)``.
"""

from __future__ import annotations

import sys
from typing import Any

import torch
from torch import Tensor

from .attribution import transformed_value_norms

__all__ = [
    "is_transformers_model",
    "trace_transformers",
    "as_hf_model",
    "config_info",
    "position_limit",
    "count_tokens",
]


def is_transformers_model(model: Any) -> bool:
    """True for a transformers ``PreTrainedModel`` (checked without importing transformers)."""
    tf = sys.modules.get("transformers")
    return tf is not None and isinstance(model, getattr(tf, "PreTrainedModel", ()))


def as_hf_model(model: Any, tokenizer: Any = None):
    """A :class:`qkv.hf.HFModel` for a transformers model (switched to the "qkv" backend)."""
    from ..hf import HFModel, wrap

    if isinstance(model, HFModel):
        if tokenizer is not None:
            return HFModel(model.model, tokenizer, model.name)
        return model
    return wrap(model, tokenizer)


def position_limit(config) -> int | None:
    """The most positions a transformers config accepts (``max_position_embeddings``, GPT-2's ``n_positions``)."""
    return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)


def config_info(config) -> dict:
    """``model_type, num_layers, num_heads, num_kv_heads, head_dim`` read from a transformers config.

    The names transformers maps for every family (GPT-2's ``n_layer``/``n_head`` included); a multimodal
    config contributes its text model's sizes. ``num_kv_heads`` defaults to ``num_heads`` (no GQA) and
    ``head_dim`` to ``hidden_size // num_heads``.
    """
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    H = getattr(text, "num_attention_heads", None)
    D = getattr(text, "head_dim", None) or (getattr(text, "hidden_size", 0) // H if H else None)
    return {
        "model_type": getattr(config, "model_type", None) or "transformers",
        "num_layers": getattr(text, "num_hidden_layers", None),
        "num_heads": H,
        "num_kv_heads": getattr(text, "num_key_value_heads", None) or H,
        "head_dim": D,
    }


def count_tokens(model: Any, text: str) -> int | None:
    """How many tokens an :class:`qkv.hf.HFModel`'s tokenizer makes of ``text``, cut at the model's limit
    (as a trace with ``truncate=True`` reads it); None when the model has no tokenizer."""
    if model.tokenizer is None:
        return None
    return len(_encode(model.tokenizer, text, True, position_limit(model.config))[0])


def _encode(tokenizer, text: str, truncate: bool, limit: int | None):
    """``(ids, tokens, offsets, special)`` from a qkv Tokenizer or a transformers tokenizer."""
    if hasattr(tokenizer, "encode") and hasattr(tokenizer, "max_positions"):  # qkv's own tokenizer
        enc = tokenizer.encode(text, truncate=truncate)
        return enc.ids, list(enc.tokens), [tuple(o) for o in enc.offsets], [bool(s) for s in enc.special]
    try:
        enc = tokenizer(
            text,
            return_offsets_mapping=True,
            return_special_tokens_mask=True,
            truncation=bool(truncate and limit),
            max_length=limit if truncate else None,
        )
    except (NotImplementedError, TypeError, ValueError):  # slow tokenizers have no offsets
        enc = tokenizer(text, return_special_tokens_mask=True)
    ids = list(enc["input_ids"])
    if limit and len(ids) > limit and not truncate:
        raise ValueError(
            f"text is {len(ids)} tokens long but the model accepts at most {limit} positions; "
            "pass truncate=True to keep the first tokens, or split the text"
        )
    special = [bool(s) for s in enc.get("special_tokens_mask", [0] * len(ids))]
    offsets = enc.get("offset_mapping") or [(0, 0)] * len(ids)
    offsets = [(0, 0) if s else (int(a), int(b)) for (a, b), s in zip(offsets, special)]
    return ids, list(tokenizer.convert_ids_to_tokens(ids)), offsets, special


def _out_weight(model, module) -> Tensor | None:
    """The attention output projection's weight as ``(E, H*D)`` (nn.Linear layout), or None."""
    for attr in ("o_proj", "out_proj", "dense", "c_proj"):
        lin = getattr(module, attr, None)
        w = getattr(lin, "weight", None)
        if isinstance(w, Tensor) and w.dim() == 2:
            return w.t() if type(lin).__name__ == "Conv1D" else w  # GPT-2's Conv1D stores (in, out)
    names = {m: n for n, m in model.named_modules()}
    name = names.get(module)
    if name and "." in name:  # BERT-like: <layer>.attention.self -> <layer>.attention.output.dense
        parent = model.get_submodule(name.rsplit(".", 1)[0])
        w = getattr(getattr(getattr(parent, "output", None), "dense", None), "weight", None)
        if isinstance(w, Tensor) and w.dim() == 2:
            return w
    return None


def trace_transformers(text: str, model: Any, tokenizer: Any = None, *, truncate: bool = False):
    """Run a transformers model on ``text`` through the "qkv" backend and record every layer and head.

    Args:
        text: the input text.
        model: a ``PreTrainedModel`` or :class:`qkv.hf.HFModel`.
        tokenizer: a transformers tokenizer or qkv Tokenizer (default: the HFModel's).
        truncate: keep the first tokens the model accepts instead of raising.

    Returns:
        A :class:`qkv.lens.trace.Trace`.
    """
    from ..hf import layer_order
    from ..nn.record import Recorder, recording
    from .trace import Trace

    hm = as_hf_model(model, tokenizer)
    if hm.tokenizer is None:
        raise ValueError(
            f"model {hm.name!r} has no tokenizer; pass tokenizer=AutoTokenizer.from_pretrained(...) "
            "(or put tokenizer.json next to config.json)"
        )
    cfg = hm.model.config
    limit = position_limit(cfg)
    ids, tokens, offsets, special = _encode(hm.tokenizer, text, truncate, limit)
    device = next(hm.model.parameters()).device
    x = torch.tensor([ids], dtype=torch.long, device=device)  # (B=1, L)
    rec = Recorder(["layers.*.attention.*"])
    was_training = hm.model.training
    hm.model.eval()
    try:
        with torch.no_grad(), recording(rec), layer_order() as modules:
            hm.model(input_ids=x, use_cache=False)
    finally:
        hm.model.train(was_training)
    N = len({n.split(".")[1] for n in rec.names()})
    if N == 0:
        raise ValueError(
            f"nothing was recorded from {hm.name!r}: its attention did not reach the qkv backend "
            f"(attn_implementation is {getattr(cfg, '_attn_implementation', None)!r}); load it with "
            "attn_implementation='qkv' after import qkv.hf"
        )

    def stack(step: str) -> Tensor:
        return torch.stack([rec[f"layers.{n}.attention.{step}"][0].float().cpu() for n in range(N)])

    q, v = stack("q"), stack("v")
    H, Hkv, D = q.shape[1], v.shape[1], q.shape[-1]
    norms = []
    for n in range(N):
        w = _out_weight(hm.model, modules[n]) if n in modules else None
        if w is None or w.shape[1] != H * v.shape[-1]:
            norms.append(torch.ones(H, len(ids)))
            continue
        with torch.no_grad():
            norms.append(transformed_value_norms(v[n : n + 1], w.detach().float().cpu(), num_heads=H)[0])
    info = {
        "name": hm.name,
        "model_type": getattr(cfg, "model_type", "transformers"),
        "num_layers": N,
        "num_heads": H,
        "num_kv_heads": Hkv,
        "head_dim": D,
    }
    return Trace(
        text=text,
        tokens=tokens,
        offsets=offsets,
        special=special,
        model=info,
        weights=stack("weights"),
        scores=stack("scores"),
        scaled=stack("scaled"),
        fv_norms=torch.stack(norms),
        q=q,
        k=stack("k"),
        v=v,
        output=stack("output"),
    )
