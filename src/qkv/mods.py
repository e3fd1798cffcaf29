"""``qkv.mods`` -- score modifications applied to the scaled scores before masking and softmax.

The public face of :mod:`qkv.core.mods` (where the mods are documented): ALiBi, soft-capping, additive
biases, any ``fn(score, b, h, q_idx, kv_idx)``, and compositions of them.

Example:
    >>> import torch, qkv
    >>> q = k = v = torch.randn(1, 2, 6, 8)
    >>> out = qkv.attention(q, k, v, score_mod=qkv.mods.softcap(30.0))
    >>> out.shape
    torch.Size([1, 2, 6, 8])
"""

from .core.mods import (
    ScoreMod,
    ScoreModLike,
    additive,
    alibi,
    alibi_slopes,
    as_mod,
    bias,
    compose,
    offset,
    shift_invariant,
    softcap,
)

__all__ = [
    "ScoreMod",
    "ScoreModLike",
    "alibi",
    "alibi_slopes",
    "softcap",
    "bias",
    "compose",
    "offset",
    "as_mod",
    "additive",
    "shift_invariant",
]
