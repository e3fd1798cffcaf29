"""Llama: RMSNorm, rotary positions (RoPE), grouped-query attention, SwiGLU MLP, tied or untied head.

One layer (pre-norm)::

    h = x + Attention(RMSNorm(x))            q, k rotated by position; Hkv <= Hq key/value heads
    out = h + W_down( silu(W_gate n) * W_up n ),   n = RMSNorm(h)

Shape legend: ``B`` batch, ``L`` length, ``hidden`` model width, ``V`` vocabulary.
"""

from __future__ import annotations

from torch import Tensor, nn

from ..nn.attention import MultiHeadAttention
from ..nn.cache import KVCache
from ..nn.rope import RotaryEmbedding
from .causal import CausalLM
from .common import RMSNorm, activation
from .config import Family, ModelConfig, WeightRule, require

__all__ = ["LlamaModel", "LlamaLayer", "FAMILY"]


class LlamaLayer(nn.Module):
    """Pre-norm decoder layer with RoPE attention and a gated MLP."""

    def __init__(self, cfg: ModelConfig, index: int, rope: RotaryEmbedding):
        super().__init__()
        self.attention_norm = RMSNorm(cfg.hidden_size, eps=cfg.norm_eps)
        self.attention = MultiHeadAttention(
            cfg.hidden_size,
            cfg.num_heads,
            num_kv_heads=cfg.num_kv_heads,
            head_dim=cfg.head_dim,
            bias=cfg.attention_bias,
            name=f"layers.{index}.attention",
        )
        self.mlp_norm = RMSNorm(cfg.hidden_size, eps=cfg.norm_eps)
        self.gate = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=cfg.mlp_bias)
        self.up = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=cfg.mlp_bias)
        self.down = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=cfg.mlp_bias)
        self.act = activation(cfg.activation)
        self._rope = (rope,)  # shared by every layer; a tuple keeps it out of this layer's submodules

    def forward(self, x: Tensor, mask, cache: KVCache | None, positions: Tensor) -> Tensor:
        h = x + self.attention(
            self.attention_norm(x), mask=mask, cache=cache, rope=self._rope[0], positions=positions
        )  # (B, L, hidden)
        n = self.mlp_norm(h)
        return h + self.down(self.act(self.gate(n)) * self.up(n))


class LlamaModel(CausalLM):
    """Llama language model; ``model(input_ids)`` -> logits ``(B, L, V)``; ``model.generate(ids, n)``."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.tokenizer = None
        self.tied_parameters = ("lm_head.weight",) if cfg.tie_word_embeddings else ()
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.rope = RotaryEmbedding(cfg.head_dim, theta=cfg.rope_theta, scaling=cfg.rope_scaling)
        self.layers = nn.ModuleList(LlamaLayer(cfg, i, self.rope) for i in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, eps=cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.tie_weights()

    def tie_weights(self) -> None:
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.token_embedding.weight

    def embed(self, input_ids: Tensor, positions: Tensor) -> Tensor:
        return self.token_embedding(input_ids)  # (B, L, hidden); positions enter through RoPE


def _rope_settings(raw: dict) -> tuple[float, dict | None]:
    """``(rope_theta, rope_scaling)`` from transformers 5 (``rope_parameters``) or 4 (``rope_theta``,
    ``rope_scaling``)."""
    params = raw.get("rope_parameters")
    if isinstance(params, dict):
        theta = float(params.get("rope_theta", raw.get("rope_theta", 10000.0)))
        kind = params.get("rope_type", params.get("type", "default"))
        return theta, None if kind == "default" else dict(params)
    scaling = raw.get("rope_scaling")
    if isinstance(scaling, dict) and scaling.get("rope_type", scaling.get("type", "default")) == "default":
        scaling = None
    return float(raw.get("rope_theta", 10000.0)), scaling


def read_config(raw: dict, name: str) -> ModelConfig:
    where = f"{name} (llama)"
    hidden = int(require(raw, "hidden_size", where))
    heads = int(require(raw, "num_attention_heads", where))
    kv_heads = int(raw.get("num_key_value_heads") or heads)
    if heads % kv_heads:
        raise ValueError(
            f"{where}: num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}; fix config.json"
        )
    theta, scaling = _rope_settings(raw)
    return ModelConfig(
        model_type="llama",
        hidden_size=hidden,
        num_layers=int(require(raw, "num_hidden_layers", where)),
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=int(raw.get("head_dim") or hidden // heads),
        vocab_size=int(require(raw, "vocab_size", where)),
        max_positions=int(raw.get("max_position_embeddings", 2048)),
        name=name,
        raw=raw,
        intermediate_size=int(require(raw, "intermediate_size", where)),
        norm_eps=float(raw.get("rms_norm_eps", 1e-6)),
        activation=raw.get("hidden_act", "silu"),
        is_causal=True,
        tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
        attention_bias=bool(raw.get("attention_bias", False)),
        mlp_bias=bool(raw.get("mlp_bias", False)),
        rope_theta=theta,
        rope_scaling=scaling,
        pad_token_id=raw.get("pad_token_id"),
        eos_token_id=raw.get("eos_token_id"),
    )


def weight_rules(cfg: ModelConfig) -> list[WeightRule]:
    rules = [WeightRule("token_embedding.weight", "embed_tokens.weight"), WeightRule("norm.weight", "norm.weight")]
    if not cfg.tie_word_embeddings:
        rules.append(WeightRule("lm_head.weight", "lm_head.weight", absolute=True))
    for i in range(cfg.num_layers):
        src, dst = f"layers.{i}", f"layers.{i}"
        names = [
            ("attention.q_proj", "self_attn.q_proj", cfg.attention_bias),
            ("attention.k_proj", "self_attn.k_proj", cfg.attention_bias),
            ("attention.v_proj", "self_attn.v_proj", cfg.attention_bias),
            ("attention.out_proj", "self_attn.o_proj", cfg.attention_bias),
            ("gate", "mlp.gate_proj", cfg.mlp_bias),
            ("up", "mlp.up_proj", cfg.mlp_bias),
            ("down", "mlp.down_proj", cfg.mlp_bias),
        ]
        for a, b, bias in names:
            rules.append(WeightRule(f"{dst}.{a}.weight", f"{src}.{b}.weight"))
            if bias:
                rules.append(WeightRule(f"{dst}.{a}.bias", f"{src}.{b}.bias"))
        rules.append(WeightRule(f"{dst}.attention_norm.weight", f"{src}.input_layernorm.weight"))
        rules.append(WeightRule(f"{dst}.mlp_norm.weight", f"{src}.post_attention_layernorm.weight"))
    return rules


FAMILY = Family(
    model_types=("llama",),
    read_config=read_config,
    build=LlamaModel,
    weight_rules=weight_rules,
    prefixes=("model.", ""),
    ignored=("rotary_emb.inv_freq", "lm_head.weight"),
)
