"""Every engine and ``merge`` on every available device (``device`` fixture: CPU always, CUDA when present):
the same inputs, built on the device, against the fp64 reference on that device by FlashAttention's rule, and
outputs that stay on the device."""

from __future__ import annotations

import pytest
import torch

import qkv
from qkv import masks, merge, mods

from .oracle import F64, compare_to_reference

ENGINES = ["reference", "sdpa", "tiled"]


def _rand(device, B=1, Hq=4, Hkv=2, Lq=70, Lk=70, D=16):
    g = torch.Generator().manual_seed(0)
    shapes = ((B, Hq, Lq, D), (B, Hkv, Lk, D), (B, Hkv, Lk, D))
    return tuple(torch.randn(s, generator=g, dtype=F64).to(device) for s in shapes)


@pytest.mark.parametrize("impl", ENGINES)
@pytest.mark.parametrize(
    "case",
    ["causal", "window", "document & causal", "padding", "alibi", "bias"],
)
def test_engine_on_device_equals_the_reference(device, impl, case):
    q, k, v = _rand(device)
    mask = {
        "causal": masks.causal("top_left"),
        "window": masks.sliding_window(9),
        "document & causal": masks.document((torch.arange(70, device=device) * 3) // 70) & masks.causal(),
        "padding": masks.padding(torch.tensor([50], device=device)),
        "alibi": masks.causal(),
        "bias": masks.causal(),
    }[case]
    mod = mod64 = None
    extra32 = extra64 = ()
    if case == "alibi":
        mod = mod64 = mods.alibi(mods.alibi_slopes(4).to(device))
    if case == "bias":
        t = torch.randn(1, 4, 70, 70, generator=torch.Generator().manual_seed(1), dtype=F64).to(device)
        b64, b32 = t.clone().requires_grad_(), t.float().requires_grad_()
        mod, mod64, extra32, extra64 = mods.bias(b32), mods.bias(b64), (b32,), (b64,)
    try:
        got, _ = compare_to_reference(
            impl,
            q,
            k,
            v,
            mask=mask,
            score_mod=mod64,
            mod32=mod,
            extra64=extra64,
            extra32=extra32,
            floor=1e-6 if device.type == "cpu" else 1e-5,  # GPU kernels: exp2, other reduction orders
            grad_rel_floor=1e-5,
        )
    except ValueError as e:  # declared refusals (sdpa takes no window, no mods, no lse) are not failures
        assert impl == "sdpa" and "cannot run these inputs" in str(e), e
        return
    assert got[0].device.type == device.type and got[1].device.type == device.type


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_returns_its_dtype_on_device(device, dtype):
    q, k, v = (t.to(dtype) for t in _rand(device))
    ref = qkv.attention(*(t.double() for t in (q, k, v)), mask=masks.sliding_window(9), impl="reference")
    for impl in ("auto", "reference", "tiled"):
        out = qkv.attention(q, k, v, mask=masks.sliding_window(9), impl=impl)
        assert out.dtype == dtype and out.device.type == device.type
        assert (out.double() - ref).abs().max() < 2e-2, impl


def test_merge_on_device_equals_one_call(device):
    q, k, v = _rand(device, Lk=90)
    mask = masks.causal()
    parts = []
    for a, b in ((0, 30), (30, 30), (30, 90)):
        m = masks.offset(mask, 0, a, q.shape[2], k.shape[2])
        parts.append(qkv.attention(q, k[:, :, a:b], v[:, :, a:b], mask=m, impl="reference", return_lse=True))
    out, lse = merge(parts)
    ref, ref_lse = qkv.attention(q, k, v, mask=mask, impl="reference", return_lse=True)
    assert out.device.type == device.type
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(lse, ref_lse, rtol=1e-10, atol=1e-10)


def test_masks_built_on_the_cpu_work_with_inputs_on_the_device(device):
    """Mask and mod metadata (lengths, ids, slopes) made on the CPU are moved, never the other way round."""
    q, k, v = (t.float() for t in _rand(device, B=2))
    mask = masks.padding(torch.tensor([40, 70])) & masks.causal()
    mod = mods.alibi(mods.alibi_slopes(4))
    ref = qkv.attention(q, k, v, mask=mask, score_mod=mod, impl="reference")
    for impl in qkv.implementations():
        if impl == "sdpa":
            continue
        out = qkv.attention(q, k, v, mask=mask, score_mod=mod, impl=impl)
        assert out.device.type == device.type
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
