"""The public functions: :func:`attention` (dispatching to an implementation) and :func:`steps`."""

from __future__ import annotations

from typing import Literal, overload

import torch
from torch import Tensor

from . import registry
from .engines.reference import Steps, run_steps
from .inputs import check_inputs
from .mask_base import MaskLike
from .mods import ScoreModLike
from .nonfinite import attend

__all__ = ["attention", "steps"]


@overload
def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    mask: MaskLike = None,
    score_mod: ScoreModLike = None,
    scale: float | None = None,
    dropout_p: float = 0.0,
    generator: torch.Generator | None = None,
    impl: str = "auto",
    return_lse: Literal[False] = False,
) -> Tensor: ...
@overload
def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    mask: MaskLike = None,
    score_mod: ScoreModLike = None,
    scale: float | None = None,
    dropout_p: float = 0.0,
    generator: torch.Generator | None = None,
    impl: str = "auto",
    return_lse: Literal[True],
) -> tuple[Tensor, Tensor]: ...
@overload
def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    mask: MaskLike = None,
    score_mod: ScoreModLike = None,
    scale: float | None = None,
    dropout_p: float = 0.0,
    generator: torch.Generator | None = None,
    impl: str = "auto",
    return_lse: bool,
) -> Tensor | tuple[Tensor, Tensor]: ...
def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    mask: MaskLike = None,
    score_mod: ScoreModLike = None,
    scale: float | None = None,
    dropout_p: float = 0.0,
    generator: torch.Generator | None = None,
    impl: str = "auto",
    return_lse: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    r"""Scaled dot-product attention: ``softmax(score_mod(q @ k^T * scale) masked) @ v``.

    Shapes (as ``torch.nn.functional.scaled_dot_product_attention``): q ``(B, Hq, Lq, D)``,
    k ``(B, Hkv, Lk, D)``, v ``(B, Hkv, Lk, Dv)`` -> out ``(B, Hq, Lq, Dv)``, lse ``(B, Hq, Lq)``.
    ``Hq % Hkv == 0`` gives GQA (``Hkv = 1``: MQA); query head ``h`` reads key/value head
    ``h // (Hq // Hkv)``.

    Args:
        q, k, v: queries, keys, values (same floating dtype and device). fp16/bf16 accumulate in
            fp32 and return the input dtype.
        mask: a :mod:`qkv.masks` mask or a bool tensor broadcastable to ``(B, Hq, Lq, Lk)``;
            ``True`` = may attend. A query with nothing to attend gets output 0 (never NaN).
        score_mod: ``fn(score, b, h, q_idx, kv_idx) -> score`` applied to the *scaled* scores
            (see :mod:`qkv.mods`: ALiBi, softcap, bias), or a list of them.
        scale: factor on ``q @ k^T``; default ``1 / sqrt(D)``.
        dropout_p: dropout probability on the weights (use only in training).
        generator: a ``torch.Generator`` that makes dropout reproducible.
        impl: ``"auto"`` or a name from :func:`qkv.implementations`.
        return_lse: also return the log-sum-exp of the masked scores (float32; float64 for
            float64 inputs), ``-inf`` for empty rows -- what :func:`qkv.merge` combines.

    NaN/inf (one rule for every mask, ``None`` included, and every implementation; :mod:`qkv.core.nonfinite`):
    a row that attends (by the mask) a key whose k or v holds NaN/inf, or a q row holding NaN/inf that attends
    anything, is NaN in out and lse; every other row is the attention of the finite inputs -- excluded
    keys/values never reach an output or a gradient. NaN rows pass no gradient.

    Returns:
        ``out``, or ``(out, lse)`` when ``return_lse``.

    Equivalent code (what every implementation computes; a doctest runs it)::

        >>> import math, torch, qkv
        >>> B, Hq, Hkv, Lq, Lk, D, Dv = 2, 4, 2, 5, 7, 8, 6
        >>> q = torch.randn(B, Hq, Lq, D, dtype=torch.float64)
        >>> k = torch.randn(B, Hkv, Lk, D, dtype=torch.float64)
        >>> v = torch.randn(B, Hkv, Lk, Dv, dtype=torch.float64)
        >>> mask = qkv.masks.causal(align="bottom_right")
        >>> def equivalent(q, k, v, mask, scale=None):
        ...     scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
        ...     k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)   # GQA: share K/V in groups
        ...     v = v.repeat_interleave(q.shape[1] // v.shape[1], dim=1)
        ...     scores = q @ k.transpose(-2, -1) * scale                    # (B, Hq, Lq, Lk)
        ...     allowed = mask.dense(q.shape[0], q.shape[1], q.shape[2], k.shape[2])
        ...     scores = scores.masked_fill(~allowed, float("-inf"))
        ...     weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)     # empty rows -> 0
        ...     return weights @ v                                          # (B, Hq, Lq, Dv)
        >>> out = qkv.attention(q, k, v, mask=mask)
        >>> torch.allclose(out, equivalent(q, k, v, mask))
        True
        >>> out.shape
        torch.Size([2, 4, 5, 6])
    """
    inp = check_inputs(
        q,
        k,
        v,
        mask=mask,
        score_mod=score_mod,
        scale=scale,
        dropout_p=dropout_p,
        generator=generator,
        return_lse=return_lse,
    )
    chosen = registry.select(impl, inp)
    out, lse = attend(chosen.forward, inp)  # the NaN/inf rule (qkv.core.nonfinite); finite inputs: the engine alone
    if not return_lse:
        return out
    assert lse is not None, f"{chosen.name} returned no lse although it declares supports.lse"
    return out, lse


def steps(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    mask: MaskLike = None,
    score_mod: ScoreModLike = None,
    scale: float | None = None,
) -> Steps:
    """Every named step of the reference chain for one call, as a :class:`Steps` named tuple.

    Fields: ``scores`` (raw ``q @ k^T``), ``scaled``, ``modified`` (after ``score_mod``), ``masked``
    (``-inf`` where masked), ``weights`` (softmax), ``output``, ``lse``; score-shaped fields are
    ``(B, Hq, Lq, Lk)`` in the compute dtype (fp32 for fp16/bf16 inputs).

    Example:
        >>> import torch, qkv
        >>> q = torch.tensor([[[[1.0, 0.0]]]]); k = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
        >>> s = qkv.steps(q, k, k)
        >>> s.scores.tolist(), [round(x, 4) for x in s.scaled[0, 0, 0].tolist()]
        ([[[[1.0, 0.0]]]], [0.7071, 0.0])
        >>> [round(x, 4) for x in s.weights[0, 0, 0].tolist()]
        [0.6698, 0.3302]
    """
    inp = check_inputs(q, k, v, mask=mask, score_mod=score_mod, scale=scale)
    return run_steps(inp)
