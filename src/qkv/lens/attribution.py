"""Attribution beyond raw attention weights: value norms and attention rollout (pure tensor maths).

Raw weights say *who* is matched, not *what* arrives. Two standard corrections:

* **Value norm** (Kobayashi et al. 2020, "Attention is Not Only a Weight"): head ``h`` adds
  ``sum_j a_ij f_h(v_j)`` to the residual stream, where ``f_h(v_j) = v_j W_O,h^T`` maps the value
  (which already carries the value bias) through the head's slice of the output projection.
  The contribution of key ``j`` to query ``i`` is ``||a_ij f_h(v_j)|| = a_ij ||f_h(v_j)||``.
  A key with a large weight but a tiny value (BERT's ``[SEP]``) contributes little.
* **Rollout** (Abnar & Zuidema 2020, "Quantifying Attention Flow"): per layer
  ``A = 0.5 * mean_heads(W) + 0.5 * I`` (the residual connection), rows renormalised, and the
  layers multiplied: ``R_l = A_l @ R_{l-1}``, ``R_0 = A_0``. Row ``i`` of ``R_l`` says how much of
  each input token reaches position ``i`` after layer ``l``.

Shape legend: ``B`` batch, ``H`` query heads, ``Hkv`` key/value heads, ``Lq``/``Lk`` query/key
lengths, ``D`` head dim, ``E`` hidden size (the output projection's output).

Example:
    >>> import torch
    >>> w = torch.tensor([[[[0.5, 0.5], [0.9, 0.1]]]], dtype=torch.float64)  # (B=1, H=1, Lq=2, Lk=2)
    >>> v = torch.tensor([[[[1.0, 0.0], [0.0, 4.0]]]], dtype=torch.float64)  # (B=1, Hkv=1, Lk=2, D=2)
    >>> out_w = torch.eye(2)                                                 # (E=2, H*D=2)
    >>> value_norms(w, v, out_w)[0, 0].tolist()                              # a_ij * ||f(v_j)||
    [[0.5, 2.0], [0.9, 0.4]]
    >>> [round(x, 3) for x in normalise_rows(value_norms(w, v, out_w))[0, 0, 0].tolist()]
    [0.2, 0.8]
    >>> rollout([w])[0].sum(-1).tolist()                        # rows sum to 1
    [[1.0, 1.0]]
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

__all__ = ["transformed_value_norms", "value_norms", "normalise_rows", "residual_attention", "rollout"]


def _check_rank(name: str, t: Tensor, rank: int, legend: str) -> None:
    if t.dim() != rank:
        raise ValueError(
            f"{name} must be {rank}-D {legend}, got shape {tuple(t.shape)}; "
            f"add the missing batch/head dims with unsqueeze"
        )


def transformed_value_norms(v: Tensor, out_weight: Tensor, num_heads: int | None = None) -> Tensor:
    """``||f_h(v_j)||`` for every query head ``h`` and key ``j``: the size of what each value carries.

    Args:
        v: values ``(B, Hkv, Lk, D)`` after the value projection (bias included).
        out_weight: the output projection's weight ``(E, H*D)`` (an ``nn.Linear`` weight: ``y = x W^T``);
            columns ``h*D:(h+1)*D`` belong to head ``h``.
        num_heads: query heads ``H`` (default ``out_weight.shape[1] // D``). With GQA (``H > Hkv``)
            query head ``h`` reads value head ``h // (H // Hkv)``.

    Returns:
        ``(B, H, Lk)`` norms of ``f_h(v_j) = v_j W_O,h^T``.
    """
    _check_rank("v", v, 4, "(B, Hkv, Lk, D)")
    _check_rank("out_weight", out_weight, 2, "(E, H*D)")
    B, Hkv, Lk, D = v.shape
    H = out_weight.shape[1] // D if num_heads is None else num_heads
    if out_weight.shape[1] != H * D:
        raise ValueError(
            f"out_weight has {out_weight.shape[1]} input features but {H} heads x head_dim {D} "
            f"= {H * D} were expected; pass the output projection's weight (E, H*D)"
        )
    if H % Hkv:
        raise ValueError(f"{H} query heads cannot share {Hkv} value heads; H must be a multiple of Hkv")
    w = out_weight.to(v.dtype).view(out_weight.shape[0], H, D).permute(1, 2, 0)  # (H, D, E): W_O,h^T per head
    vh = v.repeat_interleave(H // Hkv, dim=1)  # (B, H, Lk, D): the value head each query head reads
    fv = torch.einsum("bhkd,hde->bhke", vh, w)  # (B, H, Lk, E)
    return fv.norm(dim=-1)


def value_norms(weights: Tensor, v: Tensor, out_weight: Tensor) -> Tensor:
    """Kobayashi et al.'s ``||a_ij f_h(v_j)||`` for every head, query and key (not normalised).

    Args:
        weights: softmax weights ``(B, H, Lq, Lk)``.
        v: values ``(B, Hkv, Lk, D)``.
        out_weight: output projection weight ``(E, H*D)``.

    Returns:
        ``(B, H, Lq, Lk)``; since ``a_ij >= 0`` this is ``a_ij * ||f_h(v_j)||``.
    """
    _check_rank("weights", weights, 4, "(B, H, Lq, Lk)")
    if weights.shape[-1] != v.shape[-2]:
        raise ValueError(
            f"weights have {weights.shape[-1]} keys but v has {v.shape[-2]}; they must come "
            f"from the same attention call"
        )
    norms = transformed_value_norms(v, out_weight, num_heads=weights.shape[1])  # (B, H, Lk)
    return weights * norms.unsqueeze(-2).to(weights.dtype)  # (B, H, Lq, Lk)


def normalise_rows(x: Tensor) -> Tensor:
    """Divide each row (last dim) by its sum so it is a distribution; all-zero rows stay zero."""
    s = x.sum(dim=-1, keepdim=True)
    return x / torch.where(s > 0, s, torch.ones_like(s))


def residual_attention(weights: Tensor) -> Tensor:
    """One layer of rollout: ``0.5 * mean_heads(W) + 0.5 * I``, rows renormalised.

    Args:
        weights: ``(B, H, L, L)`` self-attention weights of one layer.

    Returns:
        ``(B, L, L)``.
    """
    _check_rank("weights", weights, 4, "(B, H, L, L)")
    L = weights.shape[-1]
    if weights.shape[-2] != L:
        raise ValueError(f"rollout needs self-attention (Lq == Lk), got Lq={weights.shape[-2]}, Lk={L}")
    eye = torch.eye(L, dtype=weights.dtype, device=weights.device)
    return normalise_rows(0.5 * weights.mean(dim=1) + 0.5 * eye)  # (B, L, L)


def rollout(layer_weights: Sequence[Tensor]) -> list[Tensor]:
    """Attention rollout after every layer (Abnar & Zuidema 2020).

    Args:
        layer_weights: per layer, weights ``(B, H, L, L)`` (bottom layer first).

    Returns:
        One ``(B, L, L)`` tensor per layer: ``R_l = A_l @ R_{l-1}``; rows sum to 1.
    """
    if len(layer_weights) == 0:
        raise ValueError("rollout needs the weights of at least one layer, got none")
    out: list[Tensor] = []
    acc = None
    for w in layer_weights:
        a = residual_attention(w)  # (B, L, L)
        acc = a if acc is None else a @ acc
        out.append(acc)
    return out
