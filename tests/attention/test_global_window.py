"""``masks.global_window`` -- a mask added in the masks module only: equal to a from-definition loop under every
implementation, and skipped block by block by the tiled engine, which was not edited for it."""

import pytest
import torch

from qkv import attention, masks
from qkv.core.engines.tiled import tiled_plan_for
from qkv.core.inputs import check_inputs

from .oracle import FUSED_GRAD_FLOOR, compare_to_reference, rand


def loop(num_global, left, right, lq, lk, align="bottom_right"):
    """The definition, one pair at a time: global rows/columns, else the window around the aligned diagonal."""
    off = lk - lq if align == "bottom_right" else 0
    m = torch.zeros(lq, lk, dtype=torch.bool)
    for i in range(lq):
        for j in range(lk):
            m[i, j] = i < num_global or j < num_global or (-left <= j - i - off <= right)
    return m


@pytest.mark.parametrize(
    "g,left,right,lq,lk,align",
    [
        (1, 1, 0, 4, 4, "bottom_right"),
        (3, 5, 5, 37, 37, "top_left"),
        (0, 2, 0, 9, 13, "bottom_right"),
        (16, 64, 0, 300, 300, "bottom_right"),
    ],
)
def test_dense_equals_the_definition(g, left, right, lq, lk, align):
    got = masks.global_window(g, left, right, align).dense(1, 1, lq, lk)[0, 0]
    assert torch.equal(got, loop(g, left, right, lq, lk, align))


@pytest.mark.parametrize("impl", ["reference", "tiled", "auto"])
@pytest.mark.parametrize("lq,lk", [(97, 97), (61, 130), (600, 600)])
def test_every_implementation_matches_the_loop_mask(impl, lq, lk):
    q, k, v = rand(2, 4, 2, lq, lk, 59, seed=lq)
    mask = masks.global_window(4, 32, 8)
    out = attention(q, k, v, mask=mask, impl=impl)
    ref = attention(q, k, v, mask=loop(4, 32, 8, lq, lk), impl="reference")  # the loop as a bool tensor
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    compare_to_reference("tiled" if impl == "auto" else impl, q, k, v, mask=mask, grad_rel_floor=FUSED_GRAD_FLOOR)


def test_sdpa_declines_it_with_a_reason():
    q, k, v = rand(1, 2, 2, 16, 16, 8)
    with pytest.raises(ValueError, match="neither SDPA's is_causal nor key padding"):
        attention(q, k, v, mask=masks.global_window(2, 3), impl="sdpa")


def test_block_map_is_exact_and_the_tiled_plan_skips_empty_blocks():
    L, B = 4096, 128
    mask = masks.global_window(64, 256)
    bm = mask.block_map(L, L, B, B)[0, 0]
    dense = mask.dense(1, 1, L, L)[0, 0].view(L // B, B, L // B, B)
    anyb, allb = dense.any(3).any(1), dense.all(3).all(1)
    assert torch.equal(bm == masks.EMPTY, ~anyb) and torch.equal(bm == masks.FULL, allb)
    assert (bm == masks.EMPTY).float().mean() > 0.8  # most blocks are empty
    q = torch.zeros(1, 8, L, 64)
    plan = tiled_plan_for(check_inputs(q, q, q, mask=mask))
    kept = int(dense.sum())
    assert kept <= plan.pairs <= 2.5 * kept < L * L / 4  # time follows the attended pairs, not the square


def test_bad_arguments_say_what_to_pass():
    with pytest.raises(ValueError, match="num_global must be a non-negative int"):
        masks.global_window(-1, 4)
    with pytest.raises(ValueError, match="left must be a non-negative int"):
        masks.global_window(1, -4)
