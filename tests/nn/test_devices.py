"""qkv.nn on every available device (``device`` fixture): multi-head attention with a KV cache and RoPE decodes
token by token exactly as one full forward, and nothing it makes lands on another device."""

from __future__ import annotations

import pytest
import torch

from qkv import masks
from qkv.nn import KVCache, MultiHeadAttention, RotaryEmbedding


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rope_on_device_keeps_device_and_dtype(device, dtype):
    rope = RotaryEmbedding(16, theta=500.0)
    x = torch.randn(2, 3, 5, 16, device=device, dtype=dtype)
    pos = torch.arange(5, device=device)
    out = rope(x, pos)
    assert out.device.type == device.type and out.dtype == dtype
    ref = RotaryEmbedding(16, theta=500.0)(x.double().cpu(), pos.cpu())
    assert (out.double().cpu() - ref).abs().max() < (1e-5 if dtype == torch.float32 else 3e-2)
    cos, sin = rope.cos_sin(pos, torch.float32)
    assert cos.device.type == device.type and sin.device.type == device.type


def test_kv_cache_decoding_equals_one_forward_on_device(device):
    torch.manual_seed(0)
    mha = MultiHeadAttention(32, 4, num_kv_heads=2).to(device)
    rope = RotaryEmbedding(8)
    x = torch.randn(2, 9, 32, device=device)
    with torch.no_grad():
        full = mha(x, mask=masks.causal(), rope=rope)
        cache = KVCache()
        steps = [mha(x[:, :4], mask=masks.causal(), rope=rope, cache=cache)]
        for i in range(4, 9):
            steps.append(mha(x[:, i : i + 1], mask=masks.causal(), rope=rope, cache=cache))
    got = torch.cat(steps, dim=1)
    assert got.device.type == device.type and cache.keys.device.type == device.type
    torch.testing.assert_close(got, full, rtol=1e-4, atol=1e-5)


def test_kv_cache_refuses_a_tensor_from_another_device_or_dtype(device):
    cache = KVCache()
    cache.append(torch.zeros(1, 2, 3, 4, device=device), torch.zeros(1, 2, 3, 4, device=device))
    with pytest.raises(ValueError, match="keep one dtype/device per cache"):
        cache.append(torch.zeros(1, 2, 1, 4, device=device, dtype=torch.float64), torch.zeros(1, 2, 1, 4))
