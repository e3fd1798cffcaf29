"""The lens's adapter for a Hugging Face transformers model run through the ``"qkv"`` attention backend.

``qkv.trace(text, model=M, tokenizer=T)`` with a loaded ``PreTrainedModel``, or ``model="dir"`` / a
cached hub id of a family qkv does not re-implement, reads the model through :class:`TransformersAdapter`.
Its attention runs through :mod:`qkv.hf`, whose calls pass the hook points
``layers.{i}.attention.{q,k,v,scores,scaled,weights,output}`` of the actual forward pass -- no model code
is patched. The output projection ``W_O`` (for ``||f_h(v_j)||`` and head edits) is found by name
(``o_proj``, ``out_proj``, ``dense``, GPT-2's ``c_proj``, BERT's ``output.dense``); layers without one get ones.

Shapes as in :class:`qkv.lens.adapters.Forward`: ``final`` ``(B, L, E)``, ``logits`` ``(B, L, V)``.
"""

from __future__ import annotations

import sys
from typing import Any

from torch import Tensor

from .adapters import Encoded, Forward, ModelAdapter

__all__ = ["TransformersAdapter", "is_transformers_model", "as_hf_model", "config_info", "position_limit"]


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
    except NotImplementedError:  # slow (Python) tokenizers have no offsets: the same call without them
        enc = tokenizer(
            text,
            return_special_tokens_mask=True,
            truncation=bool(truncate and limit),
            max_length=limit if truncate else None,
        )
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
    from transformers.pytorch_utils import Conv1D

    for attr in ("o_proj", "out_proj", "dense", "c_proj"):
        lin = getattr(module, attr, None)
        w = getattr(lin, "weight", None)
        if isinstance(w, Tensor) and w.dim() == 2:
            return w.t() if isinstance(lin, Conv1D) else w  # GPT-2's Conv1D stores (in, out)
    names = {m: n for n, m in model.named_modules()}
    name = names.get(module)
    if name and "." in name:  # BERT-like: <layer>.attention.self -> <layer>.attention.output.dense
        parent = model.get_submodule(name.rsplit(".", 1)[0])
        w = getattr(getattr(getattr(parent, "output", None), "dense", None), "weight", None)
        if isinstance(w, Tensor) and w.dim() == 2:
            return w
    return None


class TransformersAdapter(ModelAdapter):
    """A transformers model (a :class:`qkv.hf.HFModel`) run through the ``"qkv"`` backend."""

    def __init__(self, hf_model: Any):
        self.hf = self.loaded = hf_model
        self.model, self.name = hf_model.model, hf_model.name
        self._modules: dict[int, Any] = {}

    def info(self) -> dict:
        return {"name": self.name, **config_info(self.model.config)}

    @property
    def max_positions(self) -> int | None:
        return position_limit(self.model.config)

    @property
    def has_tokenizer(self) -> bool:
        return self.hf.tokenizer is not None

    def encode(self, text: str, *, truncate: bool = False) -> Encoded:
        if self.hf.tokenizer is None:
            raise ValueError(
                f"model {self.name!r} has no tokenizer; pass tokenizer=AutoTokenizer.from_pretrained(...) "
                "(or put tokenizer.json next to config.json)"
            )
        ids, tokens, offsets, special = _encode(self.hf.tokenizer, text, truncate, self.max_positions)
        return Encoded(list(ids), tokens, offsets, special)

    def out_weight(self, layer: int) -> Tensor | None:
        module = self._modules.get(layer)
        return None if module is None else _out_weight(self.model, module)

    def forward(self, ids: Tensor, attention_mask: Tensor | None) -> Forward:
        from ..hf import layer_order
        from ..nn.hooks import active

        captured: dict[str, Any] = {}

        def keep_base_output(_module, _args, output):  # the base model's last_hidden_state, before any head
            captured["final"] = output[0] if isinstance(output, tuple) else output.last_hidden_state

        handle = self.model.base_model.register_forward_hook(keep_base_output)
        was_training = self.model.training
        self.model.eval()
        try:
            with layer_order() as modules:
                out = self.model(input_ids=ids, attention_mask=attention_mask, use_cache=False)
        finally:
            handle.remove()
            self.model.train(was_training)
        self._modules = dict(modules)
        if not modules and active():
            raise ValueError(
                f"nothing ran through the qkv backend in {self.name!r}: its attention did not reach it "
                f"(attn_implementation is {getattr(self.model.config, '_attn_implementation', None)!r}); load it "
                "with attn_implementation='qkv' after import qkv.hf"
            )
        return Forward(captured["final"], getattr(out, "logits", None), None)
