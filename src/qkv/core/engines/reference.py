"""The reference attention: the essay's chain, one named function per step. It is the oracle.

    scores   = q @ k^T                       compute_scores   (B, Hq, Lq, Lk)
    scaled   = scores * scale  (1/sqrt(D))   scale_scores
    modified = score_mod(scaled)             modify_scores
    masked   = modified, -inf where masked   apply_mask
    weights  = softmax(masked)               softmax_weights  (+ lse, never NaN)
    output   = weights @ v                   weigh_values     (B, Hq, Lq, Dv)

GQA/MQA: query head ``h`` uses key/value head ``h // (Hq // Hkv)``; K and V are never copied per
query head (the query heads of one group are folded into the length dim instead).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from .. import mask_base as _masks
from .. import mods as _mods
from ..inputs import AttentionInputs
from ..lse import lse_dtype, stable_exp
from ..mask_base import index_grid

__all__ = [
    "Steps",
    "compute_scores",
    "scale_scores",
    "modify_scores",
    "apply_mask",
    "softmax_weights",
    "drop_weights",
    "weigh_values",
    "run_steps",
    "reference_forward",
]


class Steps(NamedTuple):
    """Every intermediate of one attention call (float32/64; ``(B, Hq, Lq, Lk)`` unless noted)."""

    scores: Tensor  #: raw ``q @ k^T``
    scaled: Tensor  #: ``scores * scale``
    modified: Tensor  #: after ``score_mod`` (== scaled without one)
    masked: Tensor  #: ``-inf`` where the mask forbids attending
    weights: Tensor  #: softmax over keys; rows sum to 1, or 0 when nothing may be attended
    output: Tensor  #: ``(B, Hq, Lq, Dv)`` weighted sum of values, in the input dtype
    lse: Tensor  #: ``(B, Hq, Lq)`` log-sum-exp of ``masked`` (-inf for empty rows); float32 (float64 for float64)


def compute_scores(q: Tensor, k: Tensor) -> Tensor:
    """Step 1 -- ``q @ k^T``: how well each query matches each key (a projection of q on k).

    q ``(B, Hq, Lq, D)``, k ``(B, Hkv, Lk, D)`` -> ``(B, Hq, Lq, Lk)``.
    """
    B, Hq, Lq, D = q.shape
    Hkv, Lk = k.shape[1], k.shape[2]
    g = Hq // Hkv
    qg = q.reshape(B, Hkv, g * Lq, D)  # (B, Hkv, G*Lq, D): the G query heads of a group share K
    return (qg @ k.transpose(-2, -1)).view(B, Hq, Lq, Lk)


def scale_scores(scores: Tensor, scale: float) -> Tensor:
    """Step 2 -- multiply by ``scale`` (default ``1/sqrt(D)``) so the variance stays near 1."""
    return scores * scale


def modify_scores(scaled: Tensor, score_mod: _mods.ScoreMod | None, lq: int, lk: int) -> Tensor:
    """Optional step -- apply ``score_mod(score, b, h, q_idx, kv_idx)`` (ALiBi, softcap, bias...)."""
    if score_mod is None:
        return scaled
    B, H = scaled.shape[:2]
    b, h, qi, ki = index_grid(B, H, lq, lk, scaled.device)
    return _mods.apply(score_mod, scaled, b, h, qi, ki, lq, lk)


def apply_mask(modified: Tensor, mask: _masks.Mask | None, lq: int, lk: int) -> Tensor:
    """Step 3 -- set forbidden (query, key) pairs to ``-inf`` so softmax gives them weight 0."""
    if mask is None:
        return modified
    B, H = modified.shape[:2]
    allowed = mask.dense(B, H, lq, lk, modified.device)
    return modified.masked_fill(~allowed, float("-inf"))


def softmax_weights(masked: Tensor) -> tuple[Tensor, Tensor]:
    """Step 4 -- softmax over keys, and the log-sum-exp ``lse`` ``(B, H, Lq)`` (float32; float64 for float64).

    A row whose every key is masked gets weights 0 and lse ``-inf`` -- never NaN, and zero gradient.
    """
    if masked.shape[-1] == 0:
        return masked, torch.full(masked.shape[:-1], float("-inf"), dtype=lse_dtype(masked.dtype), device=masked.device)
    p, total, lse = stable_exp(masked)
    weights = p / total
    return weights, lse.to(lse_dtype(masked.dtype))


def drop_weights(weights: Tensor, p: float, generator: torch.Generator | None = None) -> Tensor:
    """Dropout on the weights (training): zero each with probability ``p``, scale the rest by ``1/(1-p)``.

    Reproducible with ``generator``; ``p == 0`` returns ``weights`` unchanged.
    """
    if p == 0.0:
        return weights
    keep = torch.rand(weights.shape, generator=generator, device=weights.device, dtype=weights.dtype) >= p
    return weights * keep / (1.0 - p)


def weigh_values(weights: Tensor, v: Tensor) -> Tensor:
    """Step 5 -- ``weights @ v``: the match decides *who*, the values decide *what* is taken.

    weights ``(B, Hq, Lq, Lk)``, v ``(B, Hkv, Lk, Dv)`` -> ``(B, Hq, Lq, Dv)``.
    """
    B, Hq, Lq, Lk = weights.shape
    Hkv, Dv = v.shape[1], v.shape[3]
    g = Hq // Hkv
    wg = weights.reshape(B, Hkv, g * Lq, Lk)  # (B, Hkv, G*Lq, Lk)
    return (wg @ v).view(B, Hq, Lq, Dv)


def run_steps(inp: AttentionInputs) -> Steps:
    """All steps of the chain on validated inputs; fp16/bf16 are computed in fp32."""
    cd = inp.compute_dtype
    q, k, v = inp.q.to(cd), inp.k.to(cd), inp.v.to(cd)
    scores = compute_scores(q, k)
    scaled = scale_scores(scores, inp.scale)
    modified = modify_scores(scaled, inp.score_mod, inp.Lq, inp.Lk)
    masked = apply_mask(modified, inp.mask, inp.Lq, inp.Lk)
    weights, lse = softmax_weights(masked)
    dropped = drop_weights(weights, inp.dropout_p, inp.generator)
    output = weigh_values(dropped, v).to(inp.dtype)
    return Steps(scores, scaled, modified, masked, weights, output, lse)


def reference_forward(inp: AttentionInputs) -> tuple[Tensor, Tensor]:
    """``(output, lse)`` computed by :func:`run_steps`."""
    s = run_steps(inp)
    return s.output, s.lse
