"""The implementations of attention and the one table that registers them.

Each entry declares what it supports (:class:`qkv.core.registry.Supports`) -- the refusal reasons come
from there -- and its cost per device type (lower wins), with the measurement that justifies it or the
words "not measured on this device". The CPU costs are measured (``python -m bench``,
``bench/results/attention.md``); the CUDA costs follow the issue's expectation until ``bench/gpu.py``
(``bench/results/gpu.md``) measures them.

* ``reference`` (:mod:`.reference`) -- the essay's chain step by step; the oracle.
* ``sdpa`` (:mod:`.sdpa`) -- :func:`torch.nn.functional.scaled_dot_product_attention`.
* ``tiled`` (:mod:`.tiled`) -- FlashAttention-style tiles, block-sparse, O(N) memory.
* ``flex`` (:mod:`.flex`) -- PyTorch's FlexAttention with the BlockMask built from qkv's block maps
  (listed whenever ``torch.nn.attention.flex_attention`` imports).
"""

from __future__ import annotations

from ..registry import Implementation, Supports, register
from .flex import FLEX_DTYPES, flex_forward, flex_reasons, flex_unavailable
from .reference import reference_forward
from .sdpa import sdpa_forward, sdpa_mask_reason
from .tiled import compile_reason, tiled_forward

__all__ = ["REFERENCE", "SDPA", "TILED", "FLEX"]

#: At most this many query rows count as a decoding step on CUDA (not measured on this device).
DECODE_ROWS = 16

#: Below this many scores (B * Hq * Lq * Lk) the reference is faster than tiled on CPU
#: (bench --small: 0.34 vs 0.59 ms at 49k scores, 2.0 vs 1.2 ms at 197k; planning overhead).
SMALL_PROBLEM = 1 << 17

# reference (100): small problems, and what nothing else honours (dropout with a generator, or dropout with
# a mask SDPA cannot take). 5-25x slower than tiled at N >= 4096 and O(N^2) in memory.
REFERENCE = register(
    Implementation(
        name="reference",
        forward=reference_forward,
        supports=Supports(),
        # cuda: not measured on this device. A few query rows (decoding with a KV cache) are one small matmul and a
        # softmax per head: ahead of flex/tiled, whose block structure is rebuilt for every new key length.
        cost={"cpu": lambda inp: 100.0, "cuda": lambda inp: 12.0 if inp.Lq <= DECODE_ROWS else 100.0},
        description="the essay's chain step by step (materialises Lq x Lk scores); the oracle",
    )
)

# sdpa (10): rows "full" and "causal" (N = 1024..16384, fwd and fwd+bwd): torch SDPA's fused kernel at 80-96 %
# of the same-run GEMM; tiled runs that very kernel there (one segment) and is level with it, but adds
# planning, so sdpa goes first wherever it can run (no other masks, no score mods, no return_lse).
SDPA = register(
    Implementation(
        name="sdpa",
        forward=sdpa_forward,
        supports=Supports(
            masks=sdpa_mask_reason,
            score_mods=False,
            lse=False,
            dropout_generator=False,
            value_dim=False,
            empty=False,
            hint="impl='tiled'",
        ),
        cost={"cpu": lambda inp: 10.0, "cuda": lambda inp: 10.0},  # cuda: not measured on this device
        description="torch.nn.functional.scaled_dot_product_attention for no mask / is_causal / key padding "
        "(fused CPU kernel)",
    )
)

# tiled (20): everything else. Rows "window", "document", "causal_alibi": 1.1-1.4x FlexAttention (compiled) at
# N >= 4096 forward, 2-38x SDPA given the equivalent dense mask, and the only block-sparse forward+backward on
# CPU. Below SMALL_PROBLEM scores it steps back behind the reference (101).
TILED = register(
    Implementation(
        name="tiled",
        forward=tiled_forward,
        supports=Supports(dropout=False, hint="impl='reference'"),
        cost={
            "cpu": lambda inp: 20.0 if inp.B * inp.Hq * inp.Lq * inp.Lk >= SMALL_PROBLEM else 101.0,
            "cuda": lambda inp: 20.0,  # not measured on this device (its fused kernel is the CPU one)
        },
        extra_reasons=compile_reason,
        description="FlashAttention-style tiles in O(N) memory; skips empty blocks of block-sparse masks; lse, mods",
    )
)

# flex: on CPU last (110): forward only, compiled per mask structure and shape (seconds each), and 2.27x slower
# than tiled at N=16,384 (bench/results/attention.md, row "window", flex compiled vs tiled, forward). On CUDA
# (15) before tiled for block-sparse masks and score mods, behind sdpa where sdpa applies: not measured on
# this device yet (bench/gpu.py measures it against SDPA and Flex called directly).
FLEX = None
if flex_unavailable() is None:
    FLEX = register(
        Implementation(
            name="flex",
            forward=flex_forward,
            supports=Supports(
                dtypes=FLEX_DTYPES,
                dropout=False,
                dropout_generator=False,
                empty=False,
                hint="impl='tiled'",
            ),
            cost={"cpu": lambda inp: 110.0, "cuda": lambda inp: 15.0},
            description="PyTorch FlexAttention (compiled) with the BlockMask from qkv's block maps; forward only "
            "on CPU",
            extra_reasons=flex_reasons,
        )
    )
