"""MultiHeadAttention == a hand-written computation: self, cross, GQA/MQA, masks, KV cache, RoPE, recording."""

import math

import pytest
import torch

import qkv
from qkv.nn import KVCache, MultiHeadAttention, Recorder, RotaryEmbedding, recording


def by_hand(mha, x, context=None, mask=None, rope_positions=None, rope=None):
    """softmax(Q K^T / sqrt(D) masked) V per head, heads concatenated, W_O -- written out in full."""
    c = x if context is None else context
    B, Lq, _ = x.shape
    Lk = c.shape[1]
    Hq, Hkv, D = mha.num_heads, mha.num_kv_heads, mha.head_dim
    q = (x @ mha.q_proj.weight.T + mha.q_proj.bias).view(B, Lq, Hq, D).permute(0, 2, 1, 3)
    k = (c @ mha.k_proj.weight.T + mha.k_proj.bias).view(B, Lk, Hkv, D).permute(0, 2, 1, 3)
    v = (c @ mha.v_proj.weight.T + mha.v_proj.bias).view(B, Lk, Hkv, D).permute(0, 2, 1, 3)
    if rope is not None:
        q, k = rope(q, rope_positions), rope(k, rope_positions)
    heads = []
    for h in range(Hq):
        kh, vh = k[:, h // (Hq // Hkv)], v[:, h // (Hq // Hkv)]  # GQA: query head h reads kv head h // group
        s = q[:, h] @ kh.transpose(-1, -2) / math.sqrt(D)  # (B, Lq, Lk)
        if mask is not None:
            s = s.masked_fill(~mask, float("-inf"))
        heads.append(torch.softmax(s, -1) @ vh)  # (B, Lq, D)
    return torch.cat(heads, -1) @ mha.out_proj.weight.T + mha.out_proj.bias


@pytest.mark.parametrize("hq,hkv", [(4, 4), (4, 2), (6, 1)])
def test_self_attention_and_gqa_equal_hand_computation(hq, hkv):
    mha = MultiHeadAttention(48, hq, num_kv_heads=hkv).double()
    x = torch.randn(2, 7, 48, dtype=torch.float64)
    assert mha.k_proj.out_features == hkv * (48 // hq)
    torch.testing.assert_close(mha(x), by_hand(mha, x))


def test_causal_mask_equals_hand_computation():
    mha = MultiHeadAttention(32, 4, num_kv_heads=2).double()
    x = torch.randn(3, 6, 32, dtype=torch.float64)
    tril = torch.ones(6, 6, dtype=torch.bool).tril()
    torch.testing.assert_close(mha(x, mask=qkv.masks.causal()), by_hand(mha, x, mask=tril))


def test_cross_attention_equals_hand_computation():
    """Queries from x (the target), keys/values from a context of another width and length (the source)."""
    mha = MultiHeadAttention(32, 4, kv_embed_dim=20).double()
    x = torch.randn(2, 5, 32, dtype=torch.float64)
    ctx = torch.randn(2, 9, 20, dtype=torch.float64)
    out = mha(x, ctx)
    assert out.shape == (2, 5, 32)
    torch.testing.assert_close(out, by_hand(mha, x, ctx))
    # padding in the context: masked keys are ignored
    pad = torch.tensor([9, 4])
    keep = (torch.arange(9)[None, :] < pad[:, None])[:, None, :]  # (B, 1, Lk)
    torch.testing.assert_close(mha(x, ctx, mask=qkv.masks.padding(pad)), by_hand(mha, x, ctx, mask=keep))
    torch.testing.assert_close(mha(x, ctx, mask=qkv.masks.padding(pad))[1], mha(x[1:], ctx[1:, :4])[0])


def test_cross_attention_cache_reuses_context():
    mha = MultiHeadAttention(16, 2).double()
    x = torch.randn(1, 3, 16, dtype=torch.float64)
    ctx = torch.randn(1, 5, 16, dtype=torch.float64)
    cache = KVCache()
    first = mha(x[:, :1], ctx, cache=cache)
    second = mha(x[:, 1:], ctx * 0, cache=cache)  # the cached context K/V are used, not recomputed
    assert len(cache) == 5
    torch.testing.assert_close(torch.cat([first, second], 1), mha(x, ctx))


def test_equals_torch_multihead_attention():
    """Same weights in torch.nn.MultiheadAttention (PyTorch's oracle) give the same output."""
    ours = MultiHeadAttention(24, 3).double()
    ref = torch.nn.MultiheadAttention(24, 3, batch_first=True).double()
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([ours.q_proj.weight, ours.k_proj.weight, ours.v_proj.weight]))
        ref.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias]))
        ref.out_proj.weight.copy_(ours.out_proj.weight)
        ref.out_proj.bias.copy_(ours.out_proj.bias)
    x = torch.randn(2, 5, 24, dtype=torch.float64)
    torch.testing.assert_close(ours(x), ref(x, x, x, need_weights=False)[0])


@pytest.mark.parametrize("use_rope", [False, True])
def test_kv_cache_decoding_equals_full_recomputation(use_rope):
    mha = MultiHeadAttention(32, 4, num_kv_heads=2).double()
    rope = RotaryEmbedding(8, theta=100.0) if use_rope else None
    x = torch.randn(2, 9, 32, dtype=torch.float64)
    full = mha(x, mask=qkv.masks.causal(align="bottom_right"), rope=rope)
    cache = KVCache()
    steps = [mha(x[:, :4], mask=qkv.masks.causal(align="bottom_right"), cache=cache, rope=rope)]
    for t in range(4, 9):  # one query over all cached keys: bottom-right causal lets it see everything
        steps.append(mha(x[:, t : t + 1], mask=qkv.masks.causal(align="bottom_right"), cache=cache, rope=rope))
    torch.testing.assert_close(torch.cat(steps, 1), full)
    if use_rope:
        tril = torch.ones(9, 9, dtype=torch.bool).tril()
        torch.testing.assert_close(full, by_hand(mha, x, mask=tril, rope=rope, rope_positions=torch.arange(9)))


def test_recording_names_shapes_and_values():
    mha = MultiHeadAttention(32, 4, num_kv_heads=2, name="layers.2.attention")
    x = torch.randn(2, 5, 32)
    with recording(Recorder()) as rec:
        out = mha(x, mask=qkv.masks.causal())
    assert sorted(rec.names()) == sorted(
        f"layers.2.attention.{s}" for s in ("q", "k", "v", "scores", "scaled", "weights", "output")
    )
    assert rec["layers.2.attention.q"].shape == (2, 4, 5, 8)
    assert rec["layers.2.attention.k"].shape == rec["layers.2.attention.v"].shape == (2, 2, 5, 8)
    assert rec["layers.2.attention.weights"].shape == (2, 4, 5, 5)
    o = rec["layers.2.attention.output"]  # (B, Hq, Lq, Dv), before out_proj
    torch.testing.assert_close(mha.out_proj(o.transpose(1, 2).reshape(2, 5, 32)), out)
    torch.testing.assert_close(out, mha(x, mask=qkv.masks.causal()))  # same as the unrecorded path
    with recording(Recorder(["layers.3.*"])) as other:
        mha(x)
    assert other.names() == []


def test_dropout_only_while_training():
    mha = MultiHeadAttention(16, 2, dropout=0.5)
    x = torch.randn(1, 4, 16)
    mha.eval()
    torch.testing.assert_close(mha(x), mha(x))
    mha.train()
    assert not torch.allclose(mha(x), mha(x))


def test_bias_options_and_head_dim():
    mha = MultiHeadAttention(32, 4, head_dim=16, bias=False, out_bias=True)
    assert mha.q_proj.bias is None and mha.out_proj.bias is not None
    assert mha.q_proj.out_features == 64 and mha.out_proj.in_features == 64
    assert mha(torch.randn(1, 3, 32)).shape == (1, 3, 32)


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_heads 4 is not a multiple of num_kv_heads 3"):
        MultiHeadAttention(24, 4, num_kv_heads=3)
    with pytest.raises(ValueError, match="embed_dim 30 is not divisible by num_heads 4"):
        MultiHeadAttention(30, 4)
    mha = MultiHeadAttention(16, 2)
    with pytest.raises(ValueError, match=r"expected x of shape \(B, L, 16\), got \(2, 3, 8\)"):
        mha(torch.randn(2, 3, 8))
    with pytest.raises(ValueError, match=r"expected context of shape \(2, Lk, 16\)"):
        mha(torch.randn(2, 3, 16), torch.randn(1, 3, 16))
    with pytest.raises(ValueError, match="rope applies to self-attention"):
        mha(torch.randn(2, 3, 16), torch.randn(2, 3, 16), rope=RotaryEmbedding(8))


def test_gradients_flow_to_every_projection():
    mha = MultiHeadAttention(16, 4, num_kv_heads=2)
    mha(torch.randn(2, 3, 16), mask=qkv.masks.causal()).sum().backward()
    for name, p in mha.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
