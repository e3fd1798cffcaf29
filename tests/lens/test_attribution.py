"""Value-norm attribution and rollout on plain tensors against direct loops and closed forms."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from qkv.lens.attribution import normalise_rows, residual_attention, rollout, transformed_value_norms, value_norms


def direct_value_norms(weights, v, out_weight):
    """||a_ij f_h(v_j)|| by explicit loops (GQA: query head h reads value head h // (H // Hkv))."""
    B, H, Lq, Lk = weights.shape
    Hkv, D = v.shape[1], v.shape[3]
    out = torch.empty(B, H, Lq, Lk, dtype=torch.float64)
    for b in range(B):
        for h in range(H):
            w_oh = out_weight[:, h * D : (h + 1) * D].double()  # (E, D)
            for i in range(Lq):
                for j in range(Lk):
                    fv = w_oh @ v[b, h // (H // Hkv), j].double()  # (E,)
                    out[b, h, i, j] = (weights[b, h, i, j].double() * fv).norm()
    return out


@pytest.mark.parametrize("H, Hkv", [(4, 4), (4, 2), (4, 1)])
def test_value_norms_equal_a_direct_loop(H, Hkv):
    B, L, D, E = 2, 5, 3, 7
    weights = torch.softmax(torch.randn(B, H, L, L, dtype=torch.float64), -1)
    v = torch.randn(B, Hkv, L, D, dtype=torch.float64)
    out_weight = torch.randn(E, H * D, dtype=torch.float64)
    assert torch.allclose(value_norms(weights, v, out_weight), direct_value_norms(weights, v, out_weight))


def test_value_norms_with_identity_projection_are_weight_times_value_length():
    weights = torch.tensor([[[[0.25, 0.75]]]], dtype=torch.float64)  # (1, 1, 1, 2)
    v = torch.tensor([[[[3.0, 4.0], [0.0, 1.0]]]], dtype=torch.float64)  # lengths 5 and 1
    got = value_norms(weights, v, torch.eye(2))
    assert got.tolist() == [[[[1.25, 0.75]]]]
    assert normalise_rows(got).tolist() == [[[[0.625, 0.375]]]]


def test_transformed_value_norms_shape_errors():
    with pytest.raises(ValueError, match="4-D"):
        transformed_value_norms(torch.randn(3, 4, 5), torch.randn(6, 8))
    with pytest.raises(ValueError, match="input features"):
        transformed_value_norms(torch.randn(1, 2, 3, 4), torch.randn(6, 9), num_heads=2)
    with pytest.raises(ValueError, match="same attention call"):
        value_norms(torch.rand(1, 2, 3, 4), torch.randn(1, 2, 5, 4), torch.randn(6, 8))


def test_normalise_rows_keeps_zero_rows_zero():
    x = torch.tensor([[0.0, 0.0], [1.0, 3.0]])
    assert normalise_rows(x).tolist() == [[0.0, 0.0], [0.25, 0.75]]


def test_rollout_of_one_layer_is_half_mean_plus_half_identity():
    w = torch.softmax(torch.randn(1, 3, 4, 4, dtype=torch.float64), -1)
    expect = 0.5 * w.mean(1) + 0.5 * torch.eye(4, dtype=torch.float64)  # rows already sum to 1
    assert torch.allclose(residual_attention(w), expect)
    assert torch.allclose(rollout([w])[0], expect)


def test_rollout_of_identity_attention_is_identity():
    eye = torch.eye(5).expand(1, 2, 5, 5)
    for r in rollout([eye, eye, eye]):
        assert torch.equal(r, torch.eye(5).unsqueeze(0))


@given(st.integers(1, 4), st.integers(1, 6), st.integers(0, 10_000))
def test_rollout_rows_sum_to_one(layers, L, seed):
    g = torch.Generator().manual_seed(seed)
    ws = [torch.softmax(torch.randn(2, 3, L, L, generator=g, dtype=torch.float64) * 4, -1) for _ in range(layers)]
    outs = rollout(ws)
    assert len(outs) == layers
    for r in outs:
        assert r.shape == (2, L, L)
        assert torch.allclose(r.sum(-1), torch.ones(2, L, dtype=torch.float64))
        assert (r >= 0).all()


def test_rollout_errors():
    with pytest.raises(ValueError, match="at least one layer"):
        rollout([])
    with pytest.raises(ValueError, match="Lq == Lk"):
        residual_attention(torch.rand(1, 2, 3, 4))
