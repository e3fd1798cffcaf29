"""qkv.core -- the mechanism: tensors in, tensors out.

* :func:`attention` dispatches to a registered implementation (:mod:`qkv.core.engines`: ``reference`` is
  the oracle, ``sdpa``, ``tiled``, ``flex``); :func:`steps` exposes every named step of the essay's chain
  (:func:`compute_scores`, :func:`scale_scores`, :func:`modify_scores`, :func:`apply_mask`,
  :func:`softmax_weights`, :func:`weigh_values`);
* :mod:`qkv.core.masks` / :mod:`qkv.core.mods` (public as :mod:`qkv.masks` / :mod:`qkv.mods`) say who may
  attend and how scores are modified, and describe themselves to the engines;
* :func:`merge` combines partial results over disjoint keys (split-KV, KV cache, ring);
* :mod:`qkv.core.registry` holds the implementations with what they declare to support.

Example:
    >>> import torch
    >>> from qkv.core import attention, masks
    >>> q = k = v = torch.randn(1, 2, 4, 8)
    >>> attention(q, k, v, mask=masks.causal()).shape
    torch.Size([1, 2, 4, 8])
"""

from . import engines, masks, mods
from .engines.reference import (
    Steps,
    apply_mask,
    compute_scores,
    modify_scores,
    scale_scores,
    softmax_weights,
    weigh_values,
)
from .functional import attention, steps
from .inputs import AttentionInputs, check_inputs
from .merging import merge
from .registry import Implementation, Supports, implementations, register

__all__ = [
    "attention",
    "steps",
    "Steps",
    "merge",
    "masks",
    "mods",
    "implementations",
    "register",
    "Implementation",
    "Supports",
    "AttentionInputs",
    "check_inputs",
    "engines",
    "compute_scores",
    "scale_scores",
    "modify_scores",
    "apply_mask",
    "softmax_weights",
    "weigh_values",
]
