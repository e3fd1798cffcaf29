"""In-process tests of qkv.distributed: sharding layouts, the ring schedule, and ring_attention on a
world of one process (a gloo group inside the test process). The multi-process tests are in test_ring_spawn.py."""

import os

import pytest
import torch
import torch.distributed as dist
from hypothesis import given
from hypothesis import strategies as st

import qkv
from qkv import masks
from qkv.distributed import gather, positions, ring_attention, segments, shard, split
from qkv.distributed.launch import loopback_interface
from qkv.distributed.plan import EMPTY, FULL, PARTIAL, pair_kinds, plan_ring


# -- sharding -------------------------------------------------------------------------------------------
@given(n=st.integers(0, 70), world=st.integers(1, 6), layout=st.sampled_from(["contiguous", "zigzag"]))
def test_layouts_partition_the_sequence(n, world, layout):
    pos = [positions(n, world, r, layout) for r in range(world)]
    assert sorted(torch.cat(pos).tolist()) == list(range(n))  # every position exactly once
    sizes = [len(p) for p in pos]
    assert max(sizes) - min(sizes) <= (1 if layout == "contiguous" else 2)
    x = torch.arange(n) * 10
    for p, part in zip(pos, split(x, 0, world, layout)):
        assert torch.equal(part, x[p])  # split puts the rank's positions in local order


def test_zigzag_pairs_an_early_and_a_late_chunk():
    assert segments(16, 4, 0, "zigzag") == [(0, 2), (14, 2)]
    assert segments(16, 4, 3, "zigzag") == [(6, 2), (8, 2)]
    assert segments(10, 3, 2, "contiguous") == [(7, 3)]


def test_sharding_errors_say_what_to_do():
    with pytest.raises(ValueError, match="layout must be one of"):
        segments(8, 2, 0, "striped")
    with pytest.raises(ValueError, match="rank must be an int in"):
        segments(8, 2, 2)
    with pytest.raises(ValueError, match="sequence dim of \\(B, H, L, D\\) is 2"):
        split(torch.zeros(2, 3), 5, 2)
    if not dist.is_initialized():
        with pytest.raises(ValueError, match="init_process_group"):
            shard(torch.zeros(1, 1, 4, 2), 2)


# -- the schedule -----------------------------------------------------------------------------------------
def test_causal_contiguous_never_sends_across_the_wrap():
    W = 4
    p = plan_ring(masks.causal(), [8] * W, [8] * W, "contiguous")
    assert p.hops == (3, 2, 1, 0)  # shard j is needed by ranks j..W-1 only
    assert p.messages() == W * (W - 1) // 2
    assert [p.work(r) for r in range(W)] == [64 * (r + 1) for r in range(W)]  # the load imbalance
    assert all(not p.needs(i, j) for i in range(W) for j in range(W) if j > i)


def test_causal_zigzag_balances_the_work():
    W = 4
    p = plan_ring(masks.causal(), [8] * W, [8] * W, "zigzag")
    work = [p.work(r) for r in range(W)]
    assert len(set(work)) == 1 and work[0] == 9 * 4 * 4  # 9 chunk pairs of 4 x 4 on every rank
    assert sum(work) == 36 * 4 * 4  # the 36 causal chunk pairs (of 8 x 8 / 2 + 4); empty ones skipped
    assert p.messages() == W * (W - 1)


def test_sliding_window_sends_to_the_neighbour_only():
    p = plan_ring(masks.sliding_window(3), [8] * 4, [8] * 4, "contiguous")
    assert p.hops == (1, 1, 1, 0) and p.messages() == 3
    assert plan_ring(None, [5, 4], [5, 4]).hops == (1, 1)


@pytest.mark.parametrize(
    "mask",
    [
        masks.causal(),
        masks.causal("top_left"),
        masks.sliding_window(3, 1),
        masks.document(torch.tensor([0] * 7 + [1] * 9 + [2] * 14)),
        masks.padding(torch.tensor([21, 9]), torch.tensor([25, 30])),
    ],
    ids=["causal_br", "causal_tl", "window", "document", "padding"],
)
@pytest.mark.parametrize("layout", ["contiguous", "zigzag"])
@pytest.mark.parametrize("max_blocks", [1024, 3])  # exact grid, and a coarse (conservative) one
def test_pair_kinds_match_the_dense_mask(mask, layout, max_blocks):
    nq, nk, W = 30, 30, 3
    qsegs = [segments(nq, W, r, layout) for r in range(W)]
    kinds = pair_kinds(mask, qsegs, qsegs, nq, nk, max_blocks)
    dense = mask.dense(2, 1, nq, nk)  # (B|1, 1, Nq, Nk) oracle
    for i in range(W):
        for j in range(W):
            for a, (qs, lq) in enumerate(qsegs[i]):
                for b, (ks, lk) in enumerate(qsegs[j]):
                    block = dense[..., qs : qs + lq, ks : ks + lk]
                    kind = kinds[i][j][a][b]
                    truth = EMPTY if not block.any() else FULL if block.all() else PARTIAL
                    if max_blocks == 1024:
                        assert kind == truth, (i, j, a, b)
                    else:  # conservative: never EMPTY/FULL when it is not
                        assert kind == truth or kind == PARTIAL, (i, j, a, b)


def test_zigzag_plan_rejects_foreign_lengths():
    with pytest.raises(ValueError, match="not the zigzag split"):
        plan_ring(masks.causal(), [5, 5], [6, 4], "zigzag")


# -- ring_attention on a world of one process (in-process gloo group) --------------------------------------
@pytest.fixture(scope="module")
def world_of_one():
    if dist.is_initialized():
        pytest.skip("a process group already exists in this process")
    os.environ.setdefault("GLOO_SOCKET_IFNAME", loopback_interface() or "lo")
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.mark.parametrize("layout", ["contiguous", "zigzag"])
def test_world_of_one_equals_attention_and_gradchecks(world_of_one, layout):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(1, 4, 5, 3, dtype=torch.float64, generator=g, requires_grad=True)
    k = torch.randn(1, 2, 7, 3, dtype=torch.float64, generator=g, requires_grad=True)
    v = torch.randn(1, 2, 7, 2, dtype=torch.float64, generator=g, requires_grad=True)
    mask = masks.causal()
    mod = qkv.mods.alibi(qkv.mods.alibi_slopes(4))
    out, lse = ring_attention(q, k, v, mask=mask, score_mod=mod, return_lse=True, layout=layout)
    ref_out, ref_lse = qkv.attention(q, k, v, mask=mask, score_mod=mod, impl="reference", return_lse=True)
    if layout == "zigzag":  # two runs per tensor: the rank's q and k/v are in zigzag order
        ref_out, ref_lse = shard(ref_out, 2, layout=layout), shard(ref_lse, 2, layout=layout)
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-12)
    torch.testing.assert_close(lse, ref_lse, rtol=0, atol=1e-12)
    whole = qkv.attention(q, k, v, mask=mask, score_mod=mod, impl="reference")  # global order
    torch.testing.assert_close(gather(out.detach(), 2, layout=layout), whole.detach(), rtol=0, atol=1e-12)

    def f(q, k, v):
        o, lse = ring_attention(q, k, v, mask=mask, score_mod=mod, return_lse=True, layout=layout)
        return o, lse

    assert torch.autograd.gradcheck(f, (q, k, v), fast_mode=True)


def test_world_of_one_empty_rows_give_zero_not_nan(world_of_one):
    q = torch.randn(1, 2, 7, 4, dtype=torch.float64, requires_grad=True)
    kv = torch.randn(1, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    out, lse = ring_attention(q, kv, kv, mask=masks.causal(), return_lse=True)  # bottom_right: rows 0..3 empty
    assert torch.equal(out[:, :, :4], torch.zeros_like(out[:, :, :4]))
    assert torch.isinf(lse[:, :, :4]).all() and torch.isfinite(lse[:, :, 4:]).all()
    (out.sum() + lse[:, :, 4:].sum()).backward()
    assert torch.isfinite(q.grad).all() and torch.equal(q.grad[:, :, :4], torch.zeros_like(q.grad[:, :, :4]))
    assert torch.isfinite(kv.grad).all()


def test_ring_attention_input_errors(world_of_one):
    q = torch.randn(1, 2, 4, 8)
    with pytest.raises(ValueError, match="layout must be one of"):
        ring_attention(q, q, q, layout="diagonal")
    with pytest.raises(ValueError, match="timeout must be a positive number"):
        ring_attention(q, q, q, timeout=-1)
    with pytest.raises(ValueError, match="head_dim"):
        ring_attention(q, torch.randn(1, 2, 4, 7), q)
    with pytest.raises(ValueError, match="unknown impl"):
        ring_attention(q, q, q, impl="no-such-impl")
