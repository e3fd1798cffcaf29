"""Model configuration (one dataclass for every family) and the family description the loader uses.

A :class:`ModelConfig` is read from a checkpoint's ``config.json`` by the family's ``read_config``;
``raw`` keeps the original dict. A :class:`Family` tells the loader how to build the model and where
each of its parameters lives in the checkpoint (:class:`WeightRule`: explicit names, a transpose
flag for GPT-2's Conv1D, a split for fused projections).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["ModelConfig", "WeightRule", "Family", "require", "check_raw_config"]


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
    raise ValueError(
        f"{where}: config.json has no {names} (model_type {raw.get('model_type')!r}); "
        "add it (copy the model's original config.json) or check that this is the right checkpoint"
    )


# Types of the config.json keys the families read: checked before any family reads them, so that a
# string, a list or a zero where a size belongs is one clear ValueError instead of a TypeError or a
# ZeroDivisionError deep inside the model.
SIZE_KEYS = (
    "hidden_size",
    "n_embd",
    "num_attention_heads",
    "n_head",
    "num_key_value_heads",
    "num_hidden_layers",
    "n_layer",
    "vocab_size",
    "max_position_embeddings",
    "n_positions",
    "intermediate_size",
    "n_inner",
    "head_dim",
)
COUNT_KEYS = ("type_vocab_size",)  # may be 0
ID_KEYS = ("pad_token_id", "bos_token_id", "eos_token_id")
POSITIVE_FLOAT_KEYS = ("layer_norm_eps", "layer_norm_epsilon", "rms_norm_eps", "rope_theta")
STRING_KEYS = ("model_type", "hidden_act", "activation_function", "position_embedding_type")
FLAG_KEYS = (
    "tie_word_embeddings",
    "attention_bias",
    "mlp_bias",
    "scale_attn_by_inverse_layer_idx",
    "add_cross_attention",
)
OBJECT_KEYS = ("rope_scaling", "rope_parameters")


def _kind(value) -> str:
    """``value`` as the JSON type a reader would name: ``a string '384'``, ``a list``, ``the number 0``."""
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the string {value[:60]!r}"
    if isinstance(value, list):
        return f"a list of {len(value)} item(s)"
    if isinstance(value, dict):
        return f"an object with keys {sorted(value)[:6]}"
    return f"{type(value).__name__} {value!r}"


def _as_int(value) -> int | None:
    """An integer from a JSON number (``384`` or ``384.0``); None for anything else (bools included)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not value.is_integer():
        return None
    return int(value)


def check_raw_config(raw, path) -> None:
    """Check the JSON types and ranges of the keys qkv reads from ``config.json`` at ``path``.

    Raises:
        ValueError: naming the file, the key, what was expected, what arrived and the fix.
    """
    if not isinstance(raw, dict):
        raise ValueError(
            f'{path}: expected a JSON object ({{"model_type": ..., "hidden_size": ...}}) at the top '
            f"level, got {_kind(raw)}; restore the model's original config.json"
        )

    def bad(key, expected, fix="restore the value from the model's original config.json"):
        return ValueError(f"{path}: {key!r} must be {expected}, got {_kind(raw[key])}; {fix}")

    present = {k: v for k, v in raw.items() if v is not None}
    for key in SIZE_KEYS + COUNT_KEYS:
        if key in present:
            n, low = _as_int(present[key]), 0 if key in COUNT_KEYS else 1
            if n is None:
                hint = (
                    f'write it as a JSON number without quotes ("{key}": {present[key].strip()})'
                    if isinstance(present[key], str) and present[key].strip().isdigit()
                    else None
                )
                raise bad(key, "an integer" + (" >= 0" if low == 0 else " >= 1"), *([hint] if hint else []))
            if n < low:
                raise bad(key, f"an integer >= {low}")
    for key in ID_KEYS:
        if key in present:
            ids = present[key] if key == "eos_token_id" and isinstance(present[key], list) else [present[key]]
            if not ids or any((n := _as_int(i)) is None or n < 0 for i in ids):
                more = " or a list of them" if key == "eos_token_id" else ""
                raise bad(key, f"a token id (an integer >= 0){more} or null")
    for key in POSITIVE_FLOAT_KEYS:
        if key in present:
            v = present[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 or v == float("inf"):
                raise bad(key, "a positive finite number (e.g. 1e-12)")
    for key in STRING_KEYS:
        if key in present and not isinstance(present[key], str):
            raise bad(key, 'a string (e.g. "gelu")')
    for key in FLAG_KEYS:
        if key in present and not isinstance(present[key], bool) and present[key] not in (0, 1):
            raise bad(key, "true or false", "write true or false without quotes")
    for key in OBJECT_KEYS:
        if key in present and not isinstance(present[key], dict):
            raise bad(key, 'a JSON object ({"rope_type": ..., "factor": ...}) or null')
    _check_heads_split_hidden(present, path)


def _check_heads_split_hidden(present: dict, path) -> None:
    """Without an explicit ``head_dim`` the heads split the hidden size: ``hidden = heads x head_dim``."""
    if "head_dim" in present:
        return
    gpt2 = present.get("model_type") == "gpt2"  # GPT-2 reads n_embd / n_head first
    hk = next((k for k in (("n_embd", "hidden_size") if gpt2 else ("hidden_size", "n_embd")) if k in present), None)
    nk = next(
        (k for k in (("n_head", "num_attention_heads") if gpt2 else ("num_attention_heads", "n_head")) if k in present),
        None,
    )
    if hk and nk and int(present[hk]) % int(present[nk]):
        raise ValueError(
            f"{path}: {hk!r} {int(present[hk])} is not divisible by {nk!r} {int(present[nk])}, so "
            f"the heads cannot split the hidden size ({hk} = {nk} x head size); restore both values "
            "from the model's original config.json"
        )
