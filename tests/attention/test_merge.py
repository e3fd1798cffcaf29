"""qkv.merge: partial results over disjoint key sets combine into exactly one call over their union
(values and gradients, through lse too), empty parts are neutral, bad input is a clear error."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from qkv import attention, masks, merge

from .oracle import F64, rand


def parts_of(q, k, v, cuts, impl, mask=None):
    """attention over each key range [cuts[i], cuts[i+1]) with the global mask restricted to it."""
    Lq, Lk = q.shape[2], k.shape[2]
    out = []
    for a, b in zip(cuts[:-1], cuts[1:]):
        m = None if mask is None else masks.offset(mask, 0, a, Lq, Lk)
        out.append(attention(q, k[:, :, a:b], v[:, :, a:b], mask=m, impl=impl, return_lse=True))
    return out


@given(
    cuts=st.lists(st.integers(0, 50), min_size=0, max_size=5),
    impl=st.sampled_from(["reference", "tiled"]),
    masked=st.booleans(),
)
def test_any_partition_of_keys_equals_one_call(cuts, impl, masked):
    """Including empty parts (repeated cut points) and parts where some rows see nothing (masked)."""
    q, k, v = rand(2, 4, 2, 9, 50, 8, 6)
    cuts = [0, *sorted(cuts), 50]
    mask = masks.causal() if masked else None
    out, lse = merge(parts_of(q, k, v, cuts, impl, mask))
    ref, ref_lse = attention(q, k, v, mask=mask, impl="reference", return_lse=True)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(lse, ref_lse, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("impl", ["reference", "tiled"])
def test_gradients_through_merge_equal_one_call(impl):
    """Ring attention differentiates through merge: the lse gradient of every part must be exact."""
    q, k, v = (t.requires_grad_(True) for t in rand(1, 4, 2, 33, 70, 16))
    mask = masks.causal()
    out, lse = merge(parts_of(q, k, v, [0, 20, 20, 51, 70], impl, mask))
    g = torch.Generator().manual_seed(2)
    w_out, w_lse = torch.randn(out.shape, dtype=F64, generator=g), torch.randn(lse.shape, dtype=F64, generator=g)
    got = torch.autograd.grad((out * w_out).sum() + (lse * w_lse).sum(), [q, k, v])
    ref, ref_lse = attention(q, k, v, mask=mask, impl="reference", return_lse=True)
    want = torch.autograd.grad((ref * w_out).sum() + (ref_lse * w_lse).sum(), [q, k, v])
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_rows_empty_in_every_part_give_zero_and_minus_inf_without_nan():
    out = torch.randn(1, 1, 3, 4)
    lse = torch.tensor([[[0.5, float("-inf"), float("-inf")]]])
    empty = (torch.zeros(1, 1, 3, 4), torch.full((1, 1, 3), float("-inf")))
    m_out, m_lse = merge([(out, lse), empty])
    assert torch.equal(m_out[0, 0, 0], out[0, 0, 0]) and m_lse[0, 0, 0] == 0.5
    assert torch.all(m_out[0, 0, 1:] == 0) and torch.all(m_lse[0, 0, 1:] == float("-inf"))
    o = out.clone().requires_grad_(True)
    m_out, _ = merge([(o, lse), empty])
    (g,) = torch.autograd.grad(m_out.sum(), [o])
    assert torch.isfinite(g).all()


def test_single_part_is_identity_and_dtypes():
    q, k, v = rand(1, 2, 2, 5, 7, 4, dtype=torch.float32)
    part = attention(q, k, v, return_lse=True, impl="reference")
    out, lse = merge([part])
    torch.testing.assert_close(out, part[0]) and torch.testing.assert_close(lse, part[1])
    half = (part[0].half(), part[1])
    assert merge([half, half])[0].dtype == torch.float16 and merge([half, half])[1].dtype == torch.float32


@pytest.mark.parametrize(
    "parts,msg",
    [
        ([], "at least one"),
        ([(torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 4))], "expected out"),
        (
            [(torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3)), (torch.zeros(1, 2, 5, 4), torch.zeros(1, 2, 5))],
            "same queries",
        ),
    ],
)
def test_bad_parts_are_clear_errors(parts, msg):
    with pytest.raises(ValueError, match=msg):
        merge(parts)
