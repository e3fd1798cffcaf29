"""qkv.attention -- the mechanism: tensors in, tensors out.

``attention`` dispatches to a registered implementation (``reference`` is the oracle);
``steps`` exposes every named step of the chain; ``masks`` and ``mods`` say who may attend and how
scores are modified; ``merge`` combines partial results over disjoint keys.
"""
from . import masks, mods, registry
from .functional import attention, steps
from .inputs import AttentionInputs, check_inputs
from .merge import merge
from .reference import Steps, reference_forward
from .registry import Implementation, implementations, register

__all__ = ["attention", "steps", "Steps", "merge", "masks", "mods", "implementations", "register",
           "Implementation", "AttentionInputs", "check_inputs"]

register(Implementation(
    name="reference",
    forward=reference_forward,
    not_supported=lambda inp: [],
    priority=lambda inp: 100.0,
    description="the essay's chain step by step (materialises Lq x Lk scores); the oracle",
))

from .tiled import tiled_forward, tiled_not_supported  # noqa: E402  (after the registry exists)

# Priorities from bench/results/attention.md (python -m bench): tiled computes only the blocks the
# mask keeps, in PyTorch's fused CPU kernel where it can; it is the default for every masked,
# score-modified or return_lse call.
register(Implementation(
    name="tiled",
    forward=tiled_forward,
    not_supported=tiled_not_supported,
    priority=lambda inp: 20.0,
    description="FlashAttention-style tiles in O(N) memory; skips empty blocks of block-sparse masks",
))
