"""impl="sdpa" takes key padding natively (every length >= 1) and declines what would give NaN."""

import pytest
import torch

from qkv import masks
from qkv.core import attention, check_inputs, registry


def test_key_padding_matches_reference_and_auto_uses_sdpa():
    q, k, v = (torch.randn(3, 4, 9, 16, dtype=torch.float64, requires_grad=True) for _ in range(3))
    m = masks.padding(torch.tensor([9, 4, 1]))
    out = attention(q, k, v, mask=m, impl="sdpa")
    ref = attention(q, k, v, mask=m, impl="reference")
    torch.testing.assert_close(out, ref)
    g = torch.autograd.grad(out.sum(), (q, k, v))
    gr = torch.autograd.grad(ref.sum(), (q, k, v))
    for a, b in zip(g, gr):
        torch.testing.assert_close(a, b)
    big = torch.randn(8, 12, 128, 32)
    assert (
        registry.select("auto", check_inputs(big, big, big, mask=masks.padding(torch.tensor([128, 64] * 4)))).name
        == "sdpa"
    )


@pytest.mark.parametrize(
    "mask", [masks.padding(torch.tensor([5, 0])), masks.padding(torch.tensor([5, 3]), q_lengths=torch.tensor([5, 2]))]
)
def test_padding_that_empties_rows_is_declined(mask):
    q = torch.randn(2, 2, 5, 8)
    with pytest.raises(ValueError, match="neither SDPA's is_causal nor key padding"):
        attention(q, q, q, mask=mask, impl="sdpa")
    out = attention(q, q, q, mask=mask)  # auto picks an implementation that gives 0, not NaN
    assert not torch.isnan(out).any()
