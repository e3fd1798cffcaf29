"""One attention call through the hook points of :mod:`qkv.nn.hooks` -- shared by :class:`MultiHeadAttention`
and the transformers backend (:mod:`qkv.hf`), so both honour reads and writes the same way.

With no active hook set that sees the call's name, this is :func:`qkv.attention` (the fast engines). When
hooks see only ``q``/``k``/``v``/``output`` the fast engines still run on the (possibly replaced) tensors.
When they see ``scores``, ``scaled`` or ``weights`` the reference chain runs one named step at a time and
each replacement flows into the next step::

    scores = q·kᵀ ─▶ point ─▶ scaled = scores·scale ─▶ point ─▶ mod, mask ─▶ softmax ─▶ weights ─▶ point
    output = weights·v ─▶ point

Shapes as in :mod:`qkv.nn.hooks`.
"""

from __future__ import annotations

from torch import Tensor

from ..core import attention as qkv_attention
from ..core.engines.reference import (
    apply_mask,
    compute_scores,
    drop_weights,
    modify_scores,
    scale_scores,
    softmax_weights,
    weigh_values,
)
from ..core.inputs import check_inputs
from ..core.mask_base import MaskLike
from ..core.mods import ScoreModLike
from .hooks import point, wants, wants_any

__all__ = ["attend"]


def attend(
    name: str,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    mask: MaskLike = None,
    score_mod: ScoreModLike = None,
    scale: float | None = None,
    dropout_p: float = 0.0,
    impl: str = "auto",
    need_weights: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """``(output (B, Hq, Lq, Dv), weights (B, Hq, Lq, Lk) or None)`` of one attention call named ``name``.

    Args:
        name: the call's point prefix, e.g. ``layers.3.attention``.
        q, k, v, mask, score_mod, scale, dropout_p, impl: as for :func:`qkv.attention`.
        need_weights: compute the weights even when no hook asks for them (they are returned).

    Returns:
        The per-head output (after its hook point) and the weights when they were computed (after dropout
        is *not* applied to the returned weights; the output uses the dropped ones while training).
    """
    if not wants(name) and not need_weights:
        return qkv_attention(q, k, v, mask=mask, score_mod=score_mod, scale=scale, dropout_p=dropout_p, impl=impl), None
    q, k, v = point(f"{name}.q", q), point(f"{name}.k", k), point(f"{name}.v", v)
    inner = [f"{name}.{s}" for s in ("scores", "scaled", "weights")]
    if not need_weights and not wants_any(inner):
        out = qkv_attention(q, k, v, mask=mask, score_mod=score_mod, scale=scale, dropout_p=dropout_p, impl=impl)
        return point(f"{name}.output", out), None
    inp = check_inputs(q, k, v, mask=mask, score_mod=score_mod, scale=scale)
    cd = inp.compute_dtype
    scores = point(inner[0], compute_scores(inp.q.to(cd), inp.k.to(cd)))  # (B, Hq, Lq, Lk)
    scaled = point(inner[1], scale_scores(scores, inp.scale))
    masked = apply_mask(modify_scores(scaled, inp.score_mod, inp.Lq, inp.Lk), inp.mask, inp.Lq, inp.Lk)
    weights = point(inner[2], softmax_weights(masked)[0])
    out = weigh_values(drop_weights(weights, dropout_p), inp.v.to(cd)).to(inp.dtype)  # (B, Hq, Lq, Dv)
    return point(f"{name}.output", out), weights
