"""Properties of attention checked with hypothesis (closed-form facts, not examples)."""

import math

import torch
from hypothesis import given
from hypothesis import strategies as st

import qkv
from qkv import masks

F64 = torch.float64

sizes = st.tuples(
    st.integers(1, 2),
    st.sampled_from([(1, 1), (2, 1), (4, 2)]),
    st.integers(1, 12),
    st.integers(1, 12),
    st.integers(1, 9),
)
mask_kinds = st.sampled_from(["none", "causal", "causal_tl", "window", "padding", "random"])


def build(kind, B, H, lq, lk, seed):
    g = torch.Generator().manual_seed(seed)
    if kind == "none":
        return None
    if kind == "causal":
        return masks.causal()
    if kind == "causal_tl":
        return masks.causal(align="top_left")
    if kind == "window":
        return masks.sliding_window(2, 1)
    if kind == "padding":
        return masks.padding(torch.randint(0, lk + 1, (B,), generator=g))
    return torch.rand(B, H, lq, lk, generator=g) > 0.5


@given(sizes, mask_kinds, st.integers(0, 10_000))
def test_weight_rows_sum_to_one_or_zero(size, kind, seed):
    B, (Hq, Hkv), lq, lk, D = size
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, Hq, lq, D, generator=g, dtype=F64)
    k = torch.randn(B, Hkv, lk, D, generator=g, dtype=F64)
    m = build(kind, B, Hq, lq, lk, seed)
    s = qkv.steps(q, k, k, mask=m)
    sums = s.weights.sum(-1)
    allowed = torch.isfinite(s.masked).any(-1)
    assert torch.allclose(sums[allowed], torch.ones_like(sums[allowed]))
    assert torch.all(sums[~allowed] == 0) and torch.all(s.output[~allowed] == 0)
    assert not torch.isnan(s.output).any() and torch.all(s.weights >= 0)


@given(sizes, st.integers(0, 10_000))
def test_permuting_keys_and_values_together_leaves_output_unchanged(size, seed):
    B, (Hq, Hkv), lq, lk, D = size
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, Hq, lq, D, generator=g, dtype=F64)
    k = torch.randn(B, Hkv, lk, D, generator=g, dtype=F64)
    v = torch.randn(B, Hkv, lk, D + 1, generator=g, dtype=F64)
    perm = torch.randperm(lk, generator=g)
    a = qkv.attention(q, k, v)
    b = qkv.attention(q, k[:, :, perm], v[:, :, perm])
    assert torch.allclose(a, b, atol=1e-12)
    # ... and a padding mask that moves with the keys gives the same output as well
    keep = torch.rand(lk, generator=g) > 0.3
    a = qkv.attention(q, k, v, mask=keep.view(1, 1, 1, lk))
    b = qkv.attention(q, k[:, :, perm], v[:, :, perm], mask=keep[perm].view(1, 1, 1, lk))
    assert torch.allclose(a, b, atol=1e-12)


@given(st.sampled_from([4, 16, 64, 256]), st.integers(0, 1000))
def test_score_variance_grows_with_d_and_scaling_keeps_it_near_one(D, seed):
    g = torch.Generator().manual_seed(seed)
    n = 4096  # pairs; the sample variance of a variance-D variable has relative sd sqrt(2/n) ~ 2.2%
    q = torch.randn(1, 1, n, D, generator=g, dtype=F64)
    k = torch.randn(1, 1, n, D, generator=g, dtype=F64)
    s = qkv.steps(q[:, :, :64], k[:, :, :64], k[:, :, :64])
    diag = (q * k).sum(-1)  # n independent q.k products
    var = float(diag.var())
    assert abs(var / D - 1) < 6 * math.sqrt(2 / n) + 0.01
    assert abs(float((diag / math.sqrt(D)).var()) - 1) < 6 * math.sqrt(2 / n) + 0.01
    torch.testing.assert_close(s.scaled, s.scores / math.sqrt(D))
