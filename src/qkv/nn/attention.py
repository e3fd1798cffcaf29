"""Multi-head attention: learned projections around :func:`qkv.attention`.

The essay's Q, K and V are not the tokens themselves but learned views of them::

    Q = x W_Q        what each position is looking for          (B, Hq,  Lq, D)
    K = c W_K        how each position of the context is found  (B, Hkv, Lk, D)
    V = c W_V        what each position of the context carries  (B, Hkv, Lk, Dv)
    out = concat_h( attention(Q_h, K_h, V_h) ) W_O                (B, Lq, embed_dim)

``c = x`` is self-attention; a separate ``context`` is cross-attention (queries from the text being
written, keys/values from the source -- the translation case). ``num_kv_heads < num_heads`` shares
each key/value head between a group of query heads (GQA; 1 = MQA).

Shape legend: ``B`` batch, ``Hq``/``Hkv`` query/key-value heads, ``Lq``/``Lk`` lengths, ``D`` head dim.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..core.mask_base import MaskLike
from ..core.mods import ScoreModLike
from .cache import KVCache
from .hooked import attend
from .rope import RotaryEmbedding

__all__ = ["MultiHeadAttention"]


class MultiHeadAttention(nn.Module):
    """Projections ``q_proj, k_proj, v_proj, out_proj`` around :func:`qkv.attention`.

    Args:
        embed_dim: width of ``x`` (and of the output).
        num_heads: query heads ``Hq``.
        num_kv_heads: key/value heads ``Hkv`` (default ``num_heads``); must divide ``num_heads``.
        kv_embed_dim: width of ``context`` for cross-attention (default ``embed_dim``).
        head_dim: per-head dim ``D`` (default ``embed_dim // num_heads``).
        bias: biases on the q/k/v projections.
        out_bias: bias on ``out_proj`` (default: ``bias``).
        dropout: dropout on the attention weights while training.
        impl: attention implementation (``"auto"`` picks the fastest that supports the inputs).
        scale: factor on ``q @ k^T`` (default ``1/sqrt(head_dim)``).
        name: the recording name (models set ``layers.{i}.attention``).

    ``{name}.{q,k,v,scores,scaled,weights,output}`` are hook points (:mod:`qkv.nn.hooks`): an active
    :class:`qkv.nn.record.Recorder` records them, a :class:`qkv.nn.hooks.Hooks` may replace them.

    Example:
        >>> import torch
        >>> from qkv.nn import MultiHeadAttention
        >>> mha = MultiHeadAttention(32, 4, num_kv_heads=2)
        >>> mha(torch.randn(2, 5, 32)).shape
        torch.Size([2, 5, 32])
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        *,
        num_kv_heads: int | None = None,
        kv_embed_dim: int | None = None,
        head_dim: int | None = None,
        bias: bool = True,
        out_bias: bool | None = None,
        dropout: float = 0.0,
        impl: str = "auto",
        scale: float | None = None,
        name: str = "attention",
    ):
        super().__init__()
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        for nm, val in (("embed_dim", embed_dim), ("num_heads", num_heads), ("num_kv_heads", num_kv_heads)):
            if not isinstance(val, int) or isinstance(val, bool) or val <= 0:
                raise ValueError(f"MultiHeadAttention: {nm} must be a positive int, got {val!r}")
        if head_dim is None:
            if embed_dim % num_heads:
                raise ValueError(
                    f"MultiHeadAttention: embed_dim {embed_dim} is not divisible by num_heads "
                    f"{num_heads}; "
                    "choose num_heads that divides embed_dim or pass head_dim explicitly"
                )
            head_dim = embed_dim // num_heads
        if num_heads % num_kv_heads:
            raise ValueError(
                f"MultiHeadAttention: num_heads {num_heads} is not a multiple of num_kv_heads "
                f"{num_kv_heads}; each key/value head serves a whole group of query heads (GQA)"
            )
        if not (0.0 <= dropout < 1.0):
            raise ValueError(f"MultiHeadAttention: dropout must be in [0, 1), got {dropout!r}")
        kv_embed_dim = embed_dim if kv_embed_dim is None else kv_embed_dim
        self.embed_dim, self.kv_embed_dim = embed_dim, kv_embed_dim
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        self.dropout, self.impl, self.scale, self.name = float(dropout), impl, scale, name
        self.q_proj = nn.Linear(embed_dim, num_heads * head_dim, bias=bias)
        self.k_proj = nn.Linear(kv_embed_dim, num_kv_heads * head_dim, bias=bias)
        self.v_proj = nn.Linear(kv_embed_dim, num_kv_heads * head_dim, bias=bias)
        self.out_proj = nn.Linear(num_heads * head_dim, embed_dim, bias=bias if out_bias is None else out_bias)

    def _heads(self, t: Tensor, heads: int) -> Tensor:
        B, L, _ = t.shape
        return t.view(B, L, heads, self.head_dim).transpose(1, 2)  # (B, L, H*D) -> (B, H, L, D)

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        *,
        mask: MaskLike = None,
        score_mod: ScoreModLike = None,
        cache: KVCache | None = None,
        rope: RotaryEmbedding | None = None,
        positions: Tensor | None = None,
    ) -> Tensor:
        """Attend from ``x`` ``(B, Lq, embed_dim)`` to itself or to ``context`` ``(B, Lk, kv_embed_dim)``.

        Args:
            x: the queries' hidden states.
            context: keys/values source for cross-attention (None: self-attention).
            mask: a :mod:`qkv.masks` mask or bool tensor ``(B|1, Hq|1, Lq, Lk)`` over *all* keys
                (cached + new); with a cache use ``masks.causal(align="bottom_right")``.
            score_mod: see :func:`qkv.attention`.
            cache: a :class:`KVCache`; the new keys/values are appended and attention runs over
                everything cached. With ``context``, the context's K/V are computed once and reused.
            rope: a :class:`RotaryEmbedding` applied to q and k (self-attention only).
            positions: ``(Lq,)`` or ``(B, Lq)`` token positions for ``rope`` (default
                ``len(cache) + arange(Lq)``).

        Returns:
            ``(B, Lq, embed_dim)``.
        """
        if x.dim() != 3 or x.shape[-1] != self.embed_dim:
            raise ValueError(f"{self.name}: expected x of shape (B, L, {self.embed_dim}), got {tuple(x.shape)}")
        B, Lq, _ = x.shape
        past = 0 if cache is None else len(cache)
        if context is not None:
            q = self._heads(self.q_proj(x), self.num_heads)  # (B, Hq, Lq, D)
            if rope is not None:
                raise ValueError(f"{self.name}: rope applies to self-attention; drop rope= for cross-attention")
            if context.dim() != 3 or context.shape[0] != B or context.shape[-1] != self.kv_embed_dim:
                raise ValueError(
                    f"{self.name}: expected context of shape ({B}, Lk, {self.kv_embed_dim}), got {tuple(context.shape)}"
                )
            ck, cv = (cache.keys, cache.values) if cache is not None and past else (None, None)
            if ck is not None and cv is not None:
                k, v = ck, cv  # the context's K/V were computed on the first call
            else:
                k = self._heads(self.k_proj(context), self.num_kv_heads)  # (B, Hkv, Lk, D)
                v = self._heads(self.v_proj(context), self.num_kv_heads)
                if cache is not None:
                    k, v = cache.append(k, v)
        else:
            if rope is not None and positions is None:
                positions = torch.arange(past, past + Lq, device=x.device)
            q, k, v = self._project_qkv(x, rope, positions)  # (B, Hq, Lq, D), (B, Hkv, Lq, D) x 2
            if cache is not None:
                k, v = cache.append(k, v)  # (B, Hkv, past + Lq, D)
        out = self.attend(q, k, v, mask=mask, score_mod=score_mod)  # (B, Hq, Lq, D)
        out = out.transpose(1, 2).reshape(B, Lq, self.num_heads * self.head_dim)  # (B, Lq, Hq*D)
        return self.out_proj(out)

    def _project_qkv(
        self, x: Tensor, rope: RotaryEmbedding | None = None, positions: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Self-attention projections ``(q, k, v)``, q and k rotated by ``rope`` at ``positions``: one fused
        GEMM for the three (the concatenated weight is cached while the three weights are unchanged and need
        no gradient) and one rotation for the query and key heads together."""
        parts = (self.q_proj, self.k_proj, self.v_proj)
        params = [t for m in parts for t in (m.weight, m.bias) if t is not None]
        if any(m.bias is None for m in parts) and any(m.bias is not None for m in parts):  # mixed: separately
            q = self._heads(self.q_proj(x), self.num_heads)
            k = self._heads(self.k_proj(x), self.num_kv_heads)
            if rope is not None:
                q, k = rope(q, positions), rope(k, positions)
            return q, k, self._heads(self.v_proj(x), self.num_kv_heads)
        if torch.compiler.is_compiling() or torch.is_grad_enabled() and any(t.requires_grad for t in params):
            w = torch.cat([m.weight for m in parts])
            b = None if self.q_proj.bias is None else torch.cat([m.bias for m in parts])
        else:
            key = tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in params)
            cached = getattr(self, "_fused_qkv", None)
            if cached is None or cached[0] != key:
                with torch.no_grad():
                    b = None if self.q_proj.bias is None else torch.cat([m.bias for m in parts])
                    cached = (key, torch.cat([m.weight for m in parts]), b)
                object.__setattr__(self, "_fused_qkv", cached)  # not a parameter, buffer or state
            w, b = cached[1], cached[2]
        y = torch.nn.functional.linear(x, w, b)  # (B, L, (Hq + 2 Hkv) * D)
        hq, hkv = self.num_heads, self.num_kv_heads
        if rope is None:
            nq, nkv = hq * self.head_dim, hkv * self.head_dim
            q, k, v = y.split([nq, nkv, nkv], dim=-1)
            return self._heads(q, hq), self._heads(k, hkv), self._heads(v, hkv)
        y = self._heads(y, hq + 2 * hkv)  # (B, Hq + 2 Hkv, L, D)
        qk = rope(y[:, : hq + hkv], positions)  # (B, Hq + Hkv, L, D): one rotation for both
        return qk[:, :hq], qk[:, hq:], y[:, hq + hkv :]

    def attend(
        self, q: Tensor, k: Tensor, v: Tensor, *, mask: MaskLike = None, score_mod: ScoreModLike = None
    ) -> Tensor:
        """Per-head attention ``(B, Hq, Lq, Dv)`` through this module's hook points
        (:mod:`qkv.nn.hooks`: ``{name}.{q,k,v,scores,scaled,weights,output}`` can be read and replaced);
        the fast :func:`qkv.attention` when no hook set sees this module."""
        p = self.dropout if self.training else 0.0
        out, _ = attend(
            self.name, q, k, v, mask=mask, score_mod=score_mod, scale=self.scale, dropout_p=p, impl=self.impl
        )
        return out

    def extra_repr(self) -> str:
        return (
            f"name={self.name!r}, num_heads={self.num_heads}, num_kv_heads={self.num_kv_heads}, "
            f"head_dim={self.head_dim}, impl={self.impl!r}"
        )
