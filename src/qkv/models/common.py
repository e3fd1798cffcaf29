"""Pieces every family shares: output objects, input checks, masks from ``attention_mask``, norms,
activations and recording of model-level points (``embeddings``, ``layers.{i}.input``).

Shape legend: ``B`` batch, ``L`` length, ``Lk`` keys (cached + new), ``V`` vocabulary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import masks
from ..nn.hooks import point

__all__ = [
    "EncoderOutput",
    "CausalLMOutput",
    "check_input_ids",
    "key_mask",
    "RMSNorm",
    "activation",
    "record_point",
    "ACTIVATIONS",
]


@dataclass
class EncoderOutput:
    """What an encoder returns.

    Attributes:
        last_hidden_state: ``(B, L, hidden)``.
        pooled: ``(B, hidden)`` sentence embedding where the checkpoint defines pooling
            (sentence-transformers ``1_Pooling``), else None.
        hidden_states: with ``output_hidden_states=True``: embeddings output, then each layer's
            output (``num_layers + 1`` tensors ``(B, L, hidden)``).
    """

    last_hidden_state: Tensor
    pooled: Tensor | None = None
    hidden_states: tuple[Tensor, ...] | None = None


@dataclass
class CausalLMOutput:
    """What a causal LM returns.

    Attributes:
        logits: ``(B, L, V)`` next-token scores.
        last_hidden_state: ``(B, L, hidden)`` after the final norm.
        hidden_states: with ``output_hidden_states=True``: embeddings output, then each layer's
            output *before* the final norm (Hugging Face puts the normed one last instead).
    """

    logits: Tensor
    last_hidden_state: Tensor
    hidden_states: tuple[Tensor, ...] | None = None


def check_input_ids(input_ids, attention_mask, config, past: int = 0) -> None:
    """Validate ``input_ids`` ``(B, L)`` and ``attention_mask`` ``(B, past + L)``; raise ValueError otherwise."""
    if (
        not isinstance(input_ids, Tensor)
        or input_ids.dim() != 2
        or input_ids.dtype.is_floating_point
        or input_ids.dtype == torch.bool
    ):
        got = (
            f"{input_ids.dtype} {tuple(input_ids.shape)}" if isinstance(input_ids, Tensor) else type(input_ids).__name__
        )
        raise ValueError(
            f"input_ids must be an integer tensor (B, L), got {got}; use model.tokenizer.encode_batch(texts) "
            "or torch.tensor([ids]) (add a batch dim with .unsqueeze(0))"
        )
    B, L = input_ids.shape
    if L == 0:
        raise ValueError("input_ids has length 0; give at least one token")
    if past + L > config.max_positions:
        raise ValueError(
            f"input has {past + L} tokens ({past} cached + {L} new) but {config.name or config.model_type} "
            f"accepts at most {config.max_positions} positions; truncate it: "
            f"tokenizer.encode(text, truncate=True) or input_ids[:, :{config.max_positions}]"
            if past
            else f"input has {L} tokens but {config.name or config.model_type} accepts at most "
            f"{config.max_positions} positions (config.max_positions); truncate it: "
            f"tokenizer.encode(text, truncate=True) or input_ids[:, :{config.max_positions}]"
        )
    if torch.compiler.is_compiling():  # traced code reads no values: the shape checks above are all it does
        lo, hi = 0, 0
    else:
        lo, hi = int(input_ids.min()), int(input_ids.max())
    if lo < 0 or hi >= config.vocab_size:
        raise ValueError(
            f"input_ids must be in [0, {config.vocab_size}) (the vocabulary), got values in [{lo}, {hi}]; "
            "use the model's own tokenizer"
        )
    if attention_mask is not None:
        if not isinstance(attention_mask, Tensor) or tuple(attention_mask.shape) != (B, past + L):
            got = (
                str(tuple(attention_mask.shape))
                if isinstance(attention_mask, Tensor)
                else type(attention_mask).__name__
            )
            raise ValueError(
                f"attention_mask must have shape (B, cached + new) = {(B, past + L)} (1 = real token, "
                f"0 = padding), got {got}"
            )


def key_mask(attention_mask: Tensor | None):
    """``attention_mask`` ``(B, Lk)`` (1 = token, 0 = padding) -> a key mask for :func:`qkv.attention`.

    None when every token is real; ``qkv.masks.padding(lengths)`` for right padding (structured:
    implementations skip whole padded blocks); else a bool tensor ``(B, 1, 1, Lk)`` (e.g. left padding).
    """
    if attention_mask is None:
        return None
    m = attention_mask.bool()
    if torch.compiler.is_compiling():  # which kind of padding is a value: traced code passes the tensor mask
        return m[:, None, None, :]  # (B, Lk) -> (B, 1, 1, Lk); the tiled op plans from its values
    if bool(m.all()):
        return None
    lengths = m.sum(1)  # (B,)
    if torch.equal(m, torch.arange(m.shape[1], device=m.device)[None, :] < lengths[:, None]):
        return masks.padding(lengths)
    return m[:, None, None, :]  # (B, Lk) -> (B, 1, 1, Lk): broadcast over heads and queries


class RMSNorm(nn.Module):
    """``x / sqrt(mean(x^2) + eps) * weight`` (computed in float32, as Llama)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


def _gelu_new(x: Tensor) -> Tensor:
    """GPT-2's tanh approximation of GELU."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


ACTIVATIONS = {
    "gelu": F.gelu,  # exact (erf)
    "gelu_new": _gelu_new,
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
}


def activation(name: str):
    """The activation function called ``name`` in config.json."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(
            f"activation {name!r} (hidden_act / activation_function in config.json) is not supported; "
            f"known: {', '.join(ACTIVATIONS)}"
        ) from None


def record_point(name: str, tensor: Tensor) -> Tensor:
    """Pass ``tensor`` through the model-level hook point ``name`` (:func:`qkv.nn.hooks.point`): recorded by an
    active recorder, replaced by an active hook; returns what flows on."""
    return point(name, tensor)
