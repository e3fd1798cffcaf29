"""GPT-2: learned absolute positions, pre-LN layers, causal self-attention, tanh-GELU MLP, LM head
tied to the token embedding.

One layer (pre-LN)::

    h = x + Attention(LayerNorm(x))          causal: token i sees tokens 0..i
    out = h + W2 gelu_new(W1 LayerNorm(h))

The checkpoint stores Conv1D weights as ``(in, out)`` (transposed w.r.t. ``nn.Linear``) and q, k, v
fused in one ``c_attn``; the weight rules transpose and split them.

Shape legend: ``B`` batch, ``L`` length, ``hidden`` model width, ``V`` vocabulary.
"""

from __future__ import annotations

from torch import Tensor, nn

from ..nn.attention import MultiHeadAttention
from ..nn.cache import KVCache
from .causal import CausalLM
from .common import activation
from .config import Family, ModelConfig, WeightRule, require

__all__ = ["GPT2Model", "GPT2Layer", "FAMILY"]


class GPT2Layer(nn.Module):
    """Pre-LN decoder layer."""

    def __init__(self, cfg: ModelConfig, index: int):
        super().__init__()
        # scale_attn_by_inverse_layer_idx: scores additionally divided by (layer index + 1)
        scale = cfg.head_dim**-0.5 / (index + 1) if cfg.attention_scale_by_layer else None
        if not cfg.raw.get("scale_attn_weights", True):
            scale = 1.0 / (index + 1) if cfg.attention_scale_by_layer else 1.0
        self.attention_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.norm_eps)
        self.attention = MultiHeadAttention(
            cfg.hidden_size, cfg.num_heads, head_dim=cfg.head_dim, scale=scale, name=f"layers.{index}.attention"
        )
        self.mlp_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.norm_eps)
        self.up = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.down = nn.Linear(cfg.intermediate_size, cfg.hidden_size)
        self.act = activation(cfg.activation)

    def forward(self, x: Tensor, mask, cache: KVCache | None, positions: Tensor) -> Tensor:
        h = x + self.attention(self.attention_norm(x), mask=mask, cache=cache)  # (B, L, hidden)
        return h + self.down(self.act(self.up(self.mlp_norm(h))))


class GPT2Model(CausalLM):
    """GPT-2 language model; ``model(input_ids)`` -> logits ``(B, L, V)``; ``model.generate(ids, n)``."""

    tied_parameters = ("lm_head.weight",)

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.tokenizer = None
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position_embedding = nn.Embedding(cfg.max_positions, cfg.hidden_size)
        self.layers = nn.ModuleList(GPT2Layer(cfg, i) for i in range(cfg.num_layers))
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.tie_weights()

    def tie_weights(self) -> None:
        self.lm_head.weight = self.token_embedding.weight

    def embed(self, input_ids: Tensor, positions: Tensor) -> Tensor:
        return self.token_embedding(input_ids) + self.position_embedding(positions)  # (B, L, hidden)


def read_config(raw: dict, name: str) -> ModelConfig:
    where = f"{name} (gpt2)"
    hidden = int(require(raw, "n_embd", where, "hidden_size"))
    heads = int(require(raw, "n_head", where, "num_attention_heads"))
    if hidden % heads:
        raise ValueError(f"{where}: n_embd {hidden} is not divisible by n_head {heads}; fix config.json")
    if raw.get("add_cross_attention"):
        raise ValueError(f"{where}: add_cross_attention=True (encoder-decoder GPT-2) is not supported")
    return ModelConfig(
        model_type="gpt2",
        hidden_size=hidden,
        num_layers=int(require(raw, "n_layer", where, "num_hidden_layers")),
        num_heads=heads,
        num_kv_heads=heads,
        head_dim=hidden // heads,
        vocab_size=int(require(raw, "vocab_size", where)),
        max_positions=int(require(raw, "n_positions", where, "max_position_embeddings")),
        name=name,
        raw=raw,
        intermediate_size=int(raw.get("n_inner") or 4 * hidden),
        norm_eps=float(raw.get("layer_norm_epsilon", 1e-5)),
        activation=raw.get("activation_function", "gelu_new"),
        is_causal=True,
        tie_word_embeddings=True,
        attention_scale_by_layer=bool(raw.get("scale_attn_by_inverse_layer_idx", False)),
        pad_token_id=raw.get("pad_token_id"),
        eos_token_id=raw.get("eos_token_id"),
    )


def weight_rules(cfg: ModelConfig) -> list[WeightRule]:
    rules = [
        WeightRule("token_embedding.weight", "wte.weight"),
        WeightRule("position_embedding.weight", "wpe.weight"),
        WeightRule("norm.weight", "ln_f.weight"),
        WeightRule("norm.bias", "ln_f.bias"),
    ]
    for i in range(cfg.num_layers):
        src, dst = f"h.{i}", f"layers.{i}"
        for j, proj in enumerate(("q_proj", "k_proj", "v_proj")):  # fused c_attn (in, 3*hidden) -> q, k, v
            rules.append(WeightRule(f"{dst}.attention.{proj}.weight", f"{src}.attn.c_attn.weight", True, (j, 3)))
            rules.append(WeightRule(f"{dst}.attention.{proj}.bias", f"{src}.attn.c_attn.bias", False, (j, 3)))
        for a, b in (("attention.out_proj", "attn.c_proj"), ("up", "mlp.c_fc"), ("down", "mlp.c_proj")):
            rules.append(WeightRule(f"{dst}.{a}.weight", f"{src}.{b}.weight", transpose=True))  # Conv1D (in, out)
            rules.append(WeightRule(f"{dst}.{a}.bias", f"{src}.{b}.bias"))
        for a, b in (("attention_norm", "ln_1"), ("mlp_norm", "ln_2")):
            rules += [WeightRule(f"{dst}.{a}.{p}", f"{src}.{b}.{p}") for p in ("weight", "bias")]
    return rules


FAMILY = Family(
    model_types=("gpt2",),
    read_config=read_config,
    build=GPT2Model,
    weight_rules=weight_rules,
    prefixes=("", "transformer."),
    ignored=(".attn.bias", ".attn.masked_bias", "lm_head.weight"),
)
