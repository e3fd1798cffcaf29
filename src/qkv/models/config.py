"""Model configuration (one dataclass for every family) and the family description the loader uses.

A :class:`ModelConfig` is read from a checkpoint's ``config.json`` by the family's ``read_config``;
``raw`` keeps the original dict. A :class:`Family` tells the loader how to build the model and where
each of its parameters lives in the checkpoint (:class:`WeightRule`: explicit names, a transpose
flag for GPT-2's Conv1D, a split for fused projections).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["ModelConfig", "WeightRule", "Family", "require"]


@dataclass
class ModelConfig:
    """What qkv needs to know about a model (read from ``config.json``).

    Attributes:
        model_type: ``"bert"``, ``"gpt2"``, ``"llama"``.
        hidden_size, num_layers, num_heads, num_kv_heads, head_dim, vocab_size: sizes.
        max_positions: the longest input the model accepts (absolute position table size, or the
            trained context length for RoPE models).
        name: where it came from (``"minilm"``, a directory, a hub id).
        raw: the ``config.json`` dict as read.
        intermediate_size: MLP width. norm_eps: LayerNorm/RMSNorm epsilon. activation: MLP activation.
        is_causal: decoder (causal LM) or encoder.
        tie_word_embeddings: the LM head shares the token embedding matrix.
        attention_bias / mlp_bias: biases on the projections (Llama flags).
        type_vocab_size: BERT token types. rope_theta / rope_scaling: RoPE settings.
        pad_token_id, eos_token_id: special ids (may be None).
        pooling: sentence-transformers pooling (``"mean"``, ``"cls"``, ``"max"``) or None;
            normalize: L2-normalise the pooled embedding.
    """

    model_type: str
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    max_positions: int
    name: str = ""
    raw: dict = field(default_factory=dict, repr=False)
    intermediate_size: int = 0
    norm_eps: float = 1e-5
    activation: str = "gelu"
    is_causal: bool = False
    tie_word_embeddings: bool = False
    attention_bias: bool = True
    mlp_bias: bool = True
    type_vocab_size: int = 0
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None
    attention_scale_by_layer: bool = False
    pad_token_id: int | None = None
    eos_token_id: int | list | None = None
    pooling: str | None = None
    normalize: bool = False


@dataclass(frozen=True)
class WeightRule:
    """Where one qkv parameter comes from in the checkpoint.

    Attributes:
        target: qkv parameter name (``layers.0.attention.q_proj.weight``).
        source: checkpoint tensor name without the optional family prefix.
        transpose: the checkpoint stores the transpose (GPT-2 Conv1D: ``(in, out)``).
        split: ``(index, parts)``: take chunk ``index`` of ``parts`` along dim 0 (after transposing),
            e.g. GPT-2's fused ``c_attn`` holds q, k, v.
        absolute: ``source`` is never prefixed (Llama's ``lm_head.weight`` sits beside ``model.*``).
    """

    target: str
    source: str
    transpose: bool = False
    split: tuple[int, int] | None = None
    absolute: bool = False


@dataclass(frozen=True)
class Family:
    """A model family the loader knows.

    Attributes:
        model_types: ``config.json`` ``model_type`` values handled.
        read_config: ``fn(raw: dict, name: str) -> ModelConfig``.
        build: ``fn(config) -> nn.Module`` (called on the meta device; no weights yet).
        weight_rules: ``fn(config) -> list[WeightRule]`` covering every parameter except tied ones.
        prefixes: optional checkpoint prefixes (``"bert."``, ``"transformer."``, ``"model."``), the
            first entry ``""`` meaning none.
        ignored: checkpoint name suffixes that are known and deliberately unused (buffers, heads).
    """

    model_types: tuple[str, ...]
    read_config: Callable[[dict, str], ModelConfig]
    build: Callable[[ModelConfig], Any]
    weight_rules: Callable[[ModelConfig], list[WeightRule]]
    prefixes: tuple[str, ...] = ("",)
    ignored: tuple[str, ...] = ()


def require(raw: dict, key: str, where: str, *alternatives: str):
    """``raw[key]`` (or the first present alternative); a clear error naming the file otherwise."""
    for k in (key, *alternatives):
        if k in raw and raw[k] is not None:
            return raw[k]
    names = " or ".join(repr(k) for k in (key, *alternatives))
    raise ValueError(f"{where}: config.json has no {names} (model_type {raw.get('model_type')!r}); "
                     "add it (copy the model's original config.json) or check that this is the right checkpoint")
