"""BERT-style encoders (BERT, MiniLM, all-MiniLM-L6-v2): token + position + token-type embeddings,
post-LN layers of self-attention and a GELU MLP, optional sentence-transformers pooling.

One layer (post-LN)::

    h = LayerNorm(x + Attention(x))          attention over every real token (padding masked)
    out = LayerNorm(h + W2 gelu(W1 h))

Shape legend: ``B`` batch, ``L`` length, ``hidden`` model width.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn.attention import MultiHeadAttention
from .common import EncoderOutput, activation, check_input_ids, key_mask, record_point
from .config import Family, ModelConfig, WeightRule, require

__all__ = ["BertModel", "BertLayer", "BertEmbeddings", "FAMILY"]


class BertEmbeddings(nn.Module):
    """``LayerNorm(word[ids] + position[0..L) + token_type[types])``."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position_embeddings = nn.Embedding(cfg.max_positions, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(max(cfg.type_vocab_size, 1), cfg.hidden_size)
        self.norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.norm_eps)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor) -> Tensor:
        L = input_ids.shape[1]
        positions = torch.arange(L, device=input_ids.device)  # (L,)
        h = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)  # (B, L, hidden)
        h = h + self.position_embeddings(positions)
        return self.norm(h)


class BertLayer(nn.Module):
    """Post-LN encoder layer: attention, add & norm, MLP, add & norm."""

    def __init__(self, cfg: ModelConfig, index: int):
        super().__init__()
        self.attention = MultiHeadAttention(
            cfg.hidden_size,
            cfg.num_heads,
            head_dim=cfg.head_dim,
            bias=cfg.attention_bias,
            name=f"layers.{index}.attention",
        )
        self.attention_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.norm_eps)
        self.up = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.down = nn.Linear(cfg.intermediate_size, cfg.hidden_size)
        self.mlp_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.norm_eps)
        self.act = activation(cfg.activation)

    def forward(self, x: Tensor, mask) -> Tensor:
        h = self.attention_norm(x + self.attention(x, mask=mask))  # (B, L, hidden)
        return self.mlp_norm(h + self.down(self.act(self.up(h))))


class BertModel(nn.Module):
    """A BERT encoder; ``model(input_ids, attention_mask)`` -> :class:`EncoderOutput`.

    Recorded points (besides each attention's steps): ``embeddings``, ``layers.{i}.input``,
    ``layers.{i}.output``, and ``pooled`` where the checkpoint defines pooling.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.tokenizer = None
        self.embeddings = BertEmbeddings(cfg)
        self.layers = nn.ModuleList(BertLayer(cfg, i) for i in range(cfg.num_layers))

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        *,
        output_hidden_states: bool = False,
    ) -> EncoderOutput:
        """Encode ``input_ids`` ``(B, L)``; ``attention_mask`` ``(B, L)`` is 1 for tokens, 0 for padding;
        ``token_type_ids`` ``(B, L)`` default zeros (sentence A)."""
        cfg = self.config
        check_input_ids(input_ids, attention_mask, cfg)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        elif tuple(token_type_ids.shape) != tuple(input_ids.shape) or int(token_type_ids.max()) >= cfg.type_vocab_size:
            raise ValueError(
                f"token_type_ids must have shape {tuple(input_ids.shape)} with values < "
                f"{cfg.type_vocab_size}, got shape {tuple(token_type_ids.shape)} max "
                f"{int(token_type_ids.max())}; leave it None for single sentences"
            )
        mask = key_mask(attention_mask)  # (B, 1, 1, L) bool or None
        h = self.embeddings(input_ids, token_type_ids)
        h = record_point("embeddings", h)
        hidden = [h]
        for i, layer in enumerate(self.layers):
            h = record_point(f"layers.{i}.input", h)
            h = layer(h, mask)
            h = record_point(f"layers.{i}.output", h)
            hidden.append(h)
        h = record_point("final", h)
        pooled = self.pool(h, attention_mask) if cfg.pooling else None
        if pooled is not None:
            pooled = record_point("pooled", pooled)
        return EncoderOutput(
            last_hidden_state=h, pooled=pooled, hidden_states=tuple(hidden) if output_hidden_states else None
        )

    def pool(self, h: Tensor, attention_mask: Tensor | None) -> Tensor:
        """Sentence embedding ``(B, hidden)``: mean / cls / max over real tokens, then L2-normalised if configured."""
        m = (
            torch.ones(h.shape[:2], dtype=h.dtype, device=h.device)
            if attention_mask is None
            else attention_mask.to(h.dtype)
        )
        m = m.unsqueeze(-1)  # (B, L, 1)
        if self.config.pooling == "mean":
            out = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
        elif self.config.pooling == "cls":
            out = h[:, 0]
        else:  # max
            out = h.masked_fill(m == 0, -1e9).amax(1)
        return F.normalize(out, p=2, dim=1) if self.config.normalize else out


def read_config(raw: dict, name: str) -> ModelConfig:
    where = f"{name} (bert)"
    hidden = int(require(raw, "hidden_size", where))
    heads = int(require(raw, "num_attention_heads", where))
    if raw.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(
            f"{where}: position_embedding_type {raw['position_embedding_type']!r} is not supported; "
            "qkv's BERT implements 'absolute' positions only"
        )
    return ModelConfig(
        model_type=raw.get("model_type", "bert"),
        hidden_size=hidden,
        num_layers=int(require(raw, "num_hidden_layers", where)),
        num_heads=heads,
        num_kv_heads=heads,
        head_dim=hidden // heads,
        vocab_size=int(require(raw, "vocab_size", where)),
        max_positions=int(raw.get("max_position_embeddings", 512)),
        name=name,
        raw=raw,
        intermediate_size=int(raw.get("intermediate_size", 4 * hidden)),
        norm_eps=float(raw.get("layer_norm_eps", 1e-12)),
        activation=raw.get("hidden_act", "gelu"),
        is_causal=False,
        type_vocab_size=int(raw.get("type_vocab_size", 2)),
        pad_token_id=raw.get("pad_token_id", 0),
    )


def weight_rules(cfg: ModelConfig) -> list[WeightRule]:
    rules = [
        WeightRule(f"embeddings.{n}.weight", f"embeddings.{n}.weight")
        for n in ("word_embeddings", "position_embeddings", "token_type_embeddings")
    ]
    rules += [WeightRule(f"embeddings.norm.{p}", f"embeddings.LayerNorm.{p}") for p in ("weight", "bias")]
    for i in range(cfg.num_layers):
        src, dst = f"encoder.layer.{i}", f"layers.{i}"
        pairs = {
            "attention.q_proj": "attention.self.query",
            "attention.k_proj": "attention.self.key",
            "attention.v_proj": "attention.self.value",
            "attention.out_proj": "attention.output.dense",
            "attention_norm": "attention.output.LayerNorm",
            "up": "intermediate.dense",
            "down": "output.dense",
            "mlp_norm": "output.LayerNorm",
        }
        rules += [WeightRule(f"{dst}.{a}.{p}", f"{src}.{b}.{p}") for a, b in pairs.items() for p in ("weight", "bias")]
    return rules


FAMILY = Family(
    model_types=("bert",),
    read_config=read_config,
    build=BertModel,
    weight_rules=weight_rules,
    prefixes=("", "bert."),
    ignored=("embeddings.position_ids", "pooler.", "cls.", "bert.pooler."),
)
