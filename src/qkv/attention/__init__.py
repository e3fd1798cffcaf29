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

# Priorities (lowest wins), from bench/results/attention.md (`python -m bench`, B=1 H=8 D=64 fp32):
# - sdpa (10): rows "full" and "causal" (N = 1024..16384, fwd and fwd+bwd): torch SDPA's fused
#   kernel at 80-96 % of the same-run GEMM; tiled runs that very kernel there (one segment) and is
#   level with it, but adds planning, so sdpa goes first wherever it can run (no other masks, no
#   score mods, no return_lse).
# - tiled (20): everything else. Rows "window", "document", "causal_alibi": 1.1-1.4x FlexAttention
#   (compiled) at N >= 4096 forward, 2-38x SDPA given the equivalent dense mask, and the only
#   block-sparse forward+backward on CPU; reference is 5-25x slower and O(N^2) in memory.
#   Below B*Hq*Lq*Lk = 2**17 scores the reference is faster (planning overhead; section "Small
#   problems": 0.34 vs 0.59 ms at 49k scores, 2.0 vs 1.2 ms at 197k), so tiled steps back there.
# - reference (100): small problems, and what nothing else honours (dropout with a generator, or
#   dropout with a mask SDPA cannot take).
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
    priority=lambda inp: 20.0 if inp.B * inp.Hq * inp.Lq * inp.Lk >= 1 << 17 else 101.0,
    description="FlashAttention-style tiles in O(N) memory; skips empty blocks of block-sparse masks; lse, mods",
))


class _CallableModule(type(registry)):
    """``qkv.attention`` is both this package and the function :func:`attention`.

    ``qkv/__init__`` binds the name to the function, but any later (re-)import of the package (pytest's
    importlib mode, ``importlib.reload``) rebinds ``qkv.attention`` to the module; calling the module
    then runs the function, so ``qkv.attention(q, k, v)`` works whichever object the name holds.
    """

    def __call__(self, *args, **kwargs):
        return attention(*args, **kwargs)


import sys as _sys  # noqa: E402

_sys.modules[__name__].__class__ = _CallableModule
