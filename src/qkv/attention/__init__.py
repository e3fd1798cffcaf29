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

from .sdpa import sdpa_forward, sdpa_not_supported  # noqa: E402  (after the registry exists)
from .tiled import tiled_forward, tiled_not_supported  # noqa: E402

# Priorities (lowest wins) come from bench/results/attention.md (`python -m bench`):
# - sdpa: PyTorch's fused CPU kernel for what it takes natively (no mask, is_causal); the rows
#   "full" and "causal" show it level with tiled (same kernel) and without tiled's planning
#   overhead, so it goes first where it can run (no lse, no mods, no other masks).
# - tiled: every other mask/mod/return_lse call: the rows "window", "document" and
#   "causal+alibi" show it 10-100x faster than a dense-mask SDPA and the reference.
# - reference (100): only what nothing else supports (dropout with a generator).
register(Implementation(
    name="sdpa",
    forward=sdpa_forward,
    not_supported=sdpa_not_supported,
    priority=lambda inp: 10.0,
    description="torch.nn.functional.scaled_dot_product_attention for no mask / is_causal (fused CPU kernel)",
))
register(Implementation(
    name="tiled",
    forward=tiled_forward,
    not_supported=tiled_not_supported,
    priority=lambda inp: 20.0,
    description="FlashAttention-style tiles in O(N) memory; skips empty blocks of block-sparse masks; lse, mods",
))
