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
