"""impl='sdpa': equals the reference on the inputs it declares supported, and declares the rest
unsupported with reasons."""

import pytest
import torch

from qkv import masks, mods
from qkv.core import attention, registry
from qkv.core.inputs import check_inputs

from .oracle import rand


@pytest.mark.parametrize("hq,hkv", [(4, 4), (8, 2), (8, 1)])
@pytest.mark.parametrize(
    "mask,lq,lk",
    [
        (None, 97, 130),
        (masks.full(), 61, 61),
        (masks.causal(align="top_left"), 97, 130),
        (masks.causal(), 97, 97),  # bottom-right == top-left when Lq == Lk
        (masks.causal(), 1, 130),  # one decoding step sees every key
    ],
    ids=["none", "full", "causal_top_left", "causal_square", "decode_step"],
)
def test_sdpa_matches_reference(mask, lq, lk, hq, hkv):
    q, k, v = (t.requires_grad_(True) for t in rand(2, hq, hkv, lq, lk, 59))
    out = attention(q, k, v, mask=mask, impl="sdpa")
    ref = attention(q, k, v, mask=mask, impl="reference")
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    g = torch.randn_like(out)
    for a, b in zip(torch.autograd.grad(out, [q, k, v], g), torch.autograd.grad(ref, [q, k, v], g)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_is_computed_in_fp32(dtype):
    q, k, v = rand(1, 2, 2, 40, 40, 32, dtype=dtype)
    out = attention(q, k, v, mask=masks.causal(), impl="sdpa")
    ref = attention(q.float(), k.float(), v.float(), mask=masks.causal(), impl="reference")
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), ref, rtol=0, atol=2 * torch.finfo(dtype).eps)  # one rounding


def test_dropout_without_generator_runs_and_keeps_the_expectation():
    q, k, v = rand(1, 1, 1, 4, 64, 8, dtype=torch.float32)
    torch.manual_seed(0)
    outs = torch.stack([attention(q, k, v, dropout_p=0.5, impl="sdpa") for _ in range(400)])
    ref = attention(q, k, v, impl="reference")
    assert not torch.allclose(outs[0], ref)  # dropout happened
    torch.testing.assert_close(outs.mean(0), ref, rtol=0, atol=0.15)  # unbiased (scaled by 1/(1-p))


UNSUPPORTED = {
    "sliding_window": dict(mask=masks.sliding_window(4)),
    "causal_bottom_right_rectangular": dict(mask=masks.causal()),
    "bool_tensor": dict(mask=torch.ones(1, 1, 5, 7, dtype=torch.bool)),
    "score_mod": dict(score_mod=mods.softcap(5.0)),
    "return_lse": dict(return_lse=True),
    "dropout_with_generator": dict(dropout_p=0.1, generator=torch.Generator()),
}


@pytest.mark.parametrize("case", list(UNSUPPORTED))
def test_unsupported_inputs_have_reasons(case):
    q, k, v = rand(1, 2, 2, 5, 7, 8, dtype=torch.float32)
    reasons = registry.get("sdpa").not_supported_reasons(check_inputs(q, k, v, **UNSUPPORTED[case]))
    assert len(reasons) == 1 and "use impl=" in reasons[0]
    with pytest.raises(ValueError, match="impl='sdpa' cannot run"):
        attention(q, k, v, impl="sdpa", **UNSUPPORTED[case])


def test_dv_not_d_and_empty_keys_are_unsupported():
    q, k, v = rand(1, 2, 2, 5, 7, 8, 4, dtype=torch.float32)
    assert any("head_dim" in r for r in registry.get("sdpa").not_supported_reasons(check_inputs(q, k, v)))
    q, k, v = rand(1, 2, 2, 5, 0, 8, dtype=torch.float32)
    assert any("empty" in r for r in registry.get("sdpa").not_supported_reasons(check_inputs(q, k, v)))
