"""What the lens needs to know about a model and do with it -- one interface, two kinds of model.

:class:`ModelAdapter` is the lens's only view of a model: its name and sizes (``info``), how it encodes
text (tokens with character offsets), its position limit, its device, the per-layer output projection
``W_O`` that turns head outputs into the residual update, its hook-point names, and one forward pass that
returns the last hidden states (and logits / a sentence embedding where the model has them).
:class:`NativeAdapter` reads a qkv model (:mod:`qkv.models`); :class:`qkv.lens.hf_adapter.TransformersAdapter`
reads a transformers model run through the ``"qkv"`` backend (:mod:`qkv.hf`). Every trace is built
through this interface (:func:`qkv.lens.build.build_traces`), so both kinds behave the same.

Shapes: ``B`` texts, ``L`` tokens, ``E`` hidden size, ``V`` vocabulary, ``H`` query heads, ``Dv`` head dim.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["Encoded", "Forward", "ModelAdapter", "NativeAdapter"]


@dataclass(frozen=True)
class Encoded:
    """One text as the model reads it: ``L`` ids, token strings, ``(start, end)`` offsets, special flags."""

    ids: list[int]
    tokens: list[str]
    offsets: list[tuple[int, int]]
    special: list[bool]

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class Forward:
    """What one forward pass returns to the lens: ``final`` ``(B, L, E)`` last hidden states (after a final
    norm where the model has one, as transformers' ``last_hidden_state``), ``logits`` ``(B, L, V)`` where
    the model has a language-model head, ``embedding`` ``(B, E)`` where it pools a sentence embedding."""

    final: Tensor
    logits: Tensor | None = None
    embedding: Tensor | None = None


class ModelAdapter:
    """The lens's interface to a loaded model (subclasses implement every method).

    Attributes:
        model: the ``nn.Module`` that runs (a qkv model or a transformers ``PreTrainedModel``).
        loaded: what :func:`qkv.lens.loading.load_model` returns for it (the qkv model, or a :class:`qkv.hf.HFModel`).
        name: the name a trace shows.
    """

    model: Any
    loaded: Any
    name: str

    def info(self) -> dict:
        """``name, model_type, num_layers, num_heads, num_kv_heads, head_dim`` (the ``Trace.model`` dict)."""
        raise NotImplementedError  # pragma: no cover - abstract; must implement

    @property
    def max_positions(self) -> int | None:
        """The most tokens the model accepts (None when unknown)."""
        raise NotImplementedError  # pragma: no cover - abstract; must implement

    @property
    def has_tokenizer(self) -> bool:
        raise NotImplementedError  # pragma: no cover - abstract; must implement

    @property
    def pads(self) -> bool:
        """Whether texts of different lengths may share a right-padded batch."""
        return False

    @property
    def pad_token_id(self) -> int:
        return 0

    @property
    def device(self) -> torch.device:
        p = next(iter(self.model.parameters()), None)
        return torch.device("cpu") if p is None else p.device

    def encode(self, text: str, *, truncate: bool = False) -> Encoded:
        """The tokens of ``text`` (raises ValueError when longer than the model accepts and not ``truncate``)."""
        raise NotImplementedError  # pragma: no cover - abstract; must implement

    def count_tokens(self, text: str) -> int | None:
        """How many tokens of ``text`` the model reads (cut at its limit); None without a tokenizer."""
        return len(self.encode(text, truncate=True)) if self.has_tokenizer else None

    def out_weight(self, layer: int) -> Tensor | None:
        """Layer ``layer``'s attention output projection as ``(E, H*Dv)`` (nn.Linear layout), or None."""
        raise NotImplementedError  # pragma: no cover - abstract; must implement

    def attention_name(self, layer: int) -> str:
        """The hook-point prefix of layer ``layer``'s attention (``layers.{layer}.attention``)."""
        return f"layers.{layer}.attention"

    def forward(self, ids: Tensor, attention_mask: Tensor | None) -> Forward:
        """One forward pass on ``ids`` ``(B, L)`` (on :attr:`device`) with ``attention_mask`` ``(B, L)`` or None,
        through the active hook points. Runs in eval mode; restores the model's mode afterwards."""
        raise NotImplementedError  # pragma: no cover - abstract; must implement


class NativeAdapter(ModelAdapter):
    """A qkv model (:func:`qkv.models.load`): BERT/MiniLM, GPT-2, Llama."""

    def __init__(self, model: Any, name: str):
        self.model = self.loaded = model
        self.name = name

    def info(self) -> dict:
        cfg = self.model.config
        return {
            "name": self.name,
            "model_type": cfg.model_type,
            "num_layers": cfg.num_layers,
            "num_heads": cfg.num_heads,
            "num_kv_heads": cfg.num_kv_heads,
            "head_dim": cfg.head_dim,
        }

    @property
    def max_positions(self) -> int | None:
        return self.model.config.max_positions

    @property
    def has_tokenizer(self) -> bool:
        return self.model.tokenizer is not None

    @property
    def pads(self) -> bool:
        return True

    @property
    def pad_token_id(self) -> int:
        return self.model.tokenizer.pad_token_id

    def encode(self, text: str, *, truncate: bool = False) -> Encoded:
        if self.model.tokenizer is None:
            raise ValueError(
                f"model {self.name} has no tokenizer (no tokenizer.json next to its config.json); add one to trace text"
            )
        enc = self.model.tokenizer.encode(text, truncate=truncate)
        return Encoded(list(enc.ids), list(enc.tokens), [tuple(o) for o in enc.offsets], [bool(s) for s in enc.special])

    def out_weight(self, layer: int) -> Tensor | None:
        return self.model.layers[layer].attention.out_proj.weight

    def forward(self, ids: Tensor, attention_mask: Tensor | None) -> Forward:
        was_training = self.model.training
        self.model.eval()
        try:
            out = self.model(ids, attention_mask=attention_mask)
        finally:
            self.model.train(was_training)
        return Forward(out.last_hidden_state, getattr(out, "logits", None), getattr(out, "pooled", None))
