"""The reference attention against PyTorch SDPA (math backend, fp64) and hand-computed examples."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.bias import causal_lower_right

import qkv
from qkv import masks, mods

F64 = torch.float64


def sdpa(q, k, v, **kw):
    with sdpa_kernel(SDPBackend.MATH):
        return F.scaled_dot_product_attention(q, k, v, enable_gqa=q.shape[1] != k.shape[1], **kw)


def rand(B, Hq, Hkv, Lq, Lk, D, Dv=None, dtype=F64, requires_grad=False):
    Dv = D if Dv is None else Dv
    q = torch.randn(B, Hq, Lq, D, dtype=dtype, requires_grad=requires_grad)
    k = torch.randn(B, Hkv, Lk, D, dtype=dtype, requires_grad=requires_grad)
    v = torch.randn(B, Hkv, Lk, Dv, dtype=dtype, requires_grad=requires_grad)
    return q, k, v


SHAPES = [  # (B, Hq, Hkv, Lq, Lk, D, Dv)
    (1, 1, 1, 1, 1, 8, 8),
    (2, 3, 3, 7, 7, 59, 59),
    (1, 2, 2, 97, 97, 64, 64),
    (1, 2, 2, 256, 256, 8, 8),
    (2, 8, 2, 7, 97, 64, 32),  # GQA 8/2, Dv != D
    (1, 8, 1, 97, 7, 59, 16),  # MQA 8/1
    (1, 4, 4, 256, 97, 64, 8),
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_no_mask_matches_sdpa(shape):
    q, k, v = rand(*shape)
    torch.testing.assert_close(qkv.attention(q, k, v, impl="reference"), sdpa(q, k, v), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_causal_top_left_is_sdpa_is_causal(shape):
    q, k, v = rand(*shape)
    out = qkv.attention(q, k, v, mask=masks.causal(align="top_left"), impl="reference")
    torch.testing.assert_close(out, sdpa(q, k, v, is_causal=True), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("lq,lk", [(1, 1), (7, 97), (97, 97), (1, 256)])
def test_causal_bottom_right_is_sdpa_lower_right(lq, lk):
    q, k, v = rand(1, 2, 2, lq, lk, 16)
    out = qkv.attention(q, k, v, mask=masks.causal(), impl="reference")
    torch.testing.assert_close(out, sdpa(q, k, v, attn_mask=causal_lower_right(lq, lk)), rtol=1e-10, atol=1e-10)


def hand_dense(kind, B, lq, lk):
    """Masks written out with loops straight from their definitions (independent of masks.py)."""
    m = torch.zeros(B, 1, lq, lk, dtype=torch.bool)
    for b in range(B):
        for i in range(lq):
            for j in range(lk):
                if kind == "window":  # sliding_window(3, 1), bottom_right: off = lk - lq
                    off = lk - lq
                    m[b, 0, i, j] = i + off - 3 <= j <= i + off + 1
                elif kind == "window_top_left":  # sliding_window(2, 0, top_left)
                    m[b, 0, i, j] = i - 2 <= j <= i
                elif kind == "padding":  # kv_lengths = [lk, lk // 2]
                    m[b, 0, i, j] = j < [lk, lk // 2][b]
                elif kind == "document":  # ids: first third doc 0, rest doc 1 (batch 0); all doc 0 (batch 1)
                    qd = 0 if (b == 1 or i < lq // 3) else 1
                    kd = 0 if (b == 1 or j < lk // 3) else 1
                    m[b, 0, i, j] = qd == kd
                elif kind == "prefix":  # prefix 3 + causal bottom_right
                    m[b, 0, i, j] = j < 3 or j <= i + lk - lq
    return m


def make_mask(kind, B, lq, lk):
    if kind == "window":
        return masks.sliding_window(3, 1)
    if kind == "window_top_left":
        return masks.sliding_window(2, align="top_left")
    if kind == "padding":
        return masks.padding(torch.tensor([lk, lk // 2]))
    if kind == "document":
        qid = torch.stack([(torch.arange(lq) >= lq // 3).long(), torch.zeros(lq, dtype=torch.long)])
        kid = torch.stack([(torch.arange(lk) >= lk // 3).long(), torch.zeros(lk, dtype=torch.long)])
        return masks.document(qid, kid)
    if kind == "prefix":
        return masks.prefix_lm(3)
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["window", "window_top_left", "padding", "document", "prefix"])
@pytest.mark.parametrize("lq,lk", [(9, 9), (6, 13)])
def test_mask_kinds_match_hand_definitions_and_sdpa(kind, lq, lk):
    B = 2
    expected = hand_dense(kind, B, lq, lk)
    m = make_mask(kind, B, lq, lk)
    assert torch.equal(m.dense(B, 3, lq, lk).expand(B, 1, lq, lk), expected)
    q, k, v = rand(B, 3, 3, lq, lk, 8)
    out = qkv.attention(q, k, v, mask=m, impl="reference")
    nonempty = expected.any(-1, keepdim=True)  # SDPA gives NaN for rows with nothing to attend
    ref = sdpa(q, k, v, attn_mask=expected)
    torch.testing.assert_close(out.masked_fill(~nonempty, 0), ref.masked_fill(~nonempty, 0), rtol=1e-10, atol=1e-10)
    assert torch.all(out.masked_select(~nonempty) == 0)


def test_bool_tensor_mask_and_function_mask_match_sdpa():
    q, k, v = rand(2, 4, 2, 11, 13, 16)
    t = torch.rand(2, 1, 11, 13) > 0.3
    t[..., 0] = True
    torch.testing.assert_close(qkv.attention(q, k, v, mask=t), sdpa(q, k, v, attn_mask=t), rtol=1e-10, atol=1e-10)
    fm = masks.from_function(lambda b, h, qi, ki: (qi + ki + h) % 3 != 0, num_heads=4)
    dense = torch.tensor([[[[(i + j + h) % 3 != 0 for j in range(13)] for i in range(11)] for h in range(4)]])
    torch.testing.assert_close(qkv.attention(q, k, v, mask=fm), sdpa(q, k, v, attn_mask=dense), rtol=1e-10, atol=1e-10)


def test_custom_scale_matches_sdpa():
    q, k, v = rand(1, 2, 2, 9, 9, 32)
    torch.testing.assert_close(qkv.attention(q, k, v, scale=0.3), sdpa(q, k, v, scale=0.3), rtol=1e-10, atol=1e-10)


def test_alibi_equals_explicit_bias_and_sdpa_float_mask():
    H, lq, lk = 4, 5, 9
    q, k, v = rand(1, H, H, lq, lk, 16)
    slopes = mods.alibi_slopes(H)
    i = torch.arange(lq).view(-1, 1) + (lk - lq)
    j = torch.arange(lk).view(1, -1)
    bias = (-slopes.view(H, 1, 1) * (i - j).abs()).to(F64).unsqueeze(0)  # (1, H, Lq, Lk)
    a = qkv.attention(q, k, v, mask=masks.causal(), score_mod=mods.alibi(slopes))
    b = qkv.attention(q, k, v, mask=masks.causal(), score_mod=mods.bias(bias))
    causal = causal_lower_right(lq, lk)._materialize()
    c = sdpa(q, k, v, attn_mask=bias.masked_fill(~causal, float("-inf")))
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(a, c, rtol=1e-10, atol=1e-10)


def test_alibi_slopes_standard_values():
    assert mods.alibi_slopes(8).tolist() == [2 ** -(i + 1) for i in range(8)]
    # 12 heads (not a power of two): the 8 slopes of 8 heads, then every other slope of 16 heads
    s12 = mods.alibi_slopes(12).tolist()
    assert s12[:8] == [2 ** -(i + 1) for i in range(8)]
    assert s12[8:] == pytest.approx([2 ** -(0.5 * (2 * i + 1)) for i in range(4)])


def test_softcap_and_callable_mod_match_hand_computation():
    q, k, v = rand(1, 2, 2, 6, 6, 8)
    s = q @ k.transpose(-2, -1) / math.sqrt(8)
    capped = 0.5 * torch.tanh(s / 0.5)
    torch.testing.assert_close(qkv.attention(q, k, v, score_mod=mods.softcap(0.5)), torch.softmax(capped, -1) @ v)
    fn = lambda score, b, h, qi, ki: score + (h + 1) * (qi == ki)  # noqa: E731
    bonus = torch.stack([torch.eye(6, dtype=F64) * (h + 1) for h in range(2)]).unsqueeze(0)
    torch.testing.assert_close(qkv.attention(q, k, v, score_mod=fn), torch.softmax(s + bonus, -1) @ v)
    both = qkv.attention(q, k, v, score_mod=[fn, mods.softcap(0.5)])
    torch.testing.assert_close(both, torch.softmax(0.5 * torch.tanh((s + bonus) / 0.5), -1) @ v)


def test_two_token_example_worked_on_paper():
    # q = [1, 0]; k0 = [2, 0], k1 = [0, 2]; scale 1/sqrt(2):
    # scores [2, 0] -> scaled [sqrt2, 0] -> weights [e^sqrt2, 1] / (e^sqrt2 + 1) = [0.80442, 0.19558]
    q = torch.tensor([[[[1.0, 0.0]]]], dtype=F64)
    k = torch.tensor([[[[2.0, 0.0], [0.0, 2.0]]]], dtype=F64)
    v = torch.tensor([[[[10.0, 0.0], [0.0, 10.0]]]], dtype=F64)
    s = qkv.steps(q, k, v)
    assert s.scores.flatten().tolist() == [2.0, 0.0]
    assert s.scaled.flatten().tolist() == pytest.approx([math.sqrt(2), 0.0])
    w0 = math.exp(math.sqrt(2)) / (math.exp(math.sqrt(2)) + 1)
    assert s.weights.flatten().tolist() == pytest.approx([w0, 1 - w0])
    assert w0 == pytest.approx(0.80442, abs=1e-5)
    assert s.output.flatten().tolist() == pytest.approx([10 * w0, 10 * (1 - w0)])
    assert float(s.lse) == pytest.approx(math.log(math.exp(math.sqrt(2)) + 1))


def test_essay_sentence_toy_it_attends_to_cat():
    tokens = "The cat sat on the mat because it was tired .".split()
    assert len(tokens) == 11
    cat, mat, it = tokens.index("cat"), tokens.index("mat"), tokens.index("it")
    D = 8
    keys = torch.zeros(11, D, dtype=F64)
    keys[:, 7] = 1.0  # every token is a little findable
    keys[cat, 0] = 4.0  # "cat": animate noun -- what a tired "it" looks for
    keys[mat, 0] = 1.5  # "mat": a noun too, but not one that gets tired
    keys[mat, 1] = 3.0
    query_it = torch.zeros(D, dtype=F64)
    query_it[0] = 4.0  # "it" asks: which noun can be tired?
    values = torch.eye(11, D + 3, dtype=F64)  # one-hot content per token: the output says whose content it took
    q = query_it.view(1, 1, 1, D)
    s = qkv.steps(q, keys.view(1, 1, 11, D), values.view(1, 1, 11, D + 3))
    w = s.weights[0, 0, 0]
    assert int(w.argmax()) == cat
    assert w[cat] > 0.9 and w[cat] > 10 * w[mat]
    out = s.output[0, 0, 0]
    assert int(out.argmax()) == cat  # the cat's value is carried into "it"
    torch.testing.assert_close(out[:11], w)  # with one-hot values the output IS the weights
    assert it not in (cat, mat)


def test_fully_masked_rows_are_zero_not_nan_with_zero_gradient():
    q, k, v = rand(2, 2, 2, 5, 4, 8, requires_grad=True)
    m = masks.padding(torch.tensor([4, 0]), q_lengths=torch.tensor([3, 5]))
    out, lse = qkv.attention(q, k, v, mask=m, return_lse=True)
    assert not torch.isnan(out).any() and not torch.isnan(lse).any()
    assert torch.all(out[1] == 0) and torch.all(out[0, :, 3:] == 0)
    assert torch.all(lse[1] == float("-inf")) and torch.all(torch.isfinite(lse[0, :, :3]))
    s = qkv.steps(q, k, v, mask=m)
    assert torch.all(s.weights[1] == 0)
    (out.sum() + lse[torch.isfinite(lse)].sum()).backward()
    for t in (q, k, v):
        assert not torch.isnan(t.grad).any()
    assert torch.all(q.grad[1] == 0) and torch.all(q.grad[0, :, 3:] == 0)
    assert torch.all(k.grad[1] == 0) and torch.all(v.grad[1] == 0)


def test_empty_sequences():
    q, k, v = rand(2, 2, 2, 0, 5, 8)
    out, lse = qkv.attention(q, k, v, return_lse=True)
    assert out.shape == (2, 2, 0, 8) and lse.shape == (2, 2, 0)
    q, k, v = rand(2, 2, 2, 3, 0, 8, Dv=4)
    out, lse = qkv.attention(q, k, v, return_lse=True)
    assert out.shape == (2, 2, 3, 4) and torch.all(out == 0) and torch.all(lse == float("-inf"))


def test_dropout_reproducible_and_unbiased_in_expectation():
    q, k, v = rand(1, 2, 2, 6, 6, 8)
    a = qkv.attention(q, k, v, dropout_p=0.5, generator=torch.Generator().manual_seed(3))
    b = qkv.attention(q, k, v, dropout_p=0.5, generator=torch.Generator().manual_seed(3))
    c = qkv.attention(q, k, v, dropout_p=0.5, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    # exactly: weights * keep / (1 - p) with keep drawn from the same generator
    w = qkv.steps(q, k, v).weights
    keep = torch.rand(w.shape, generator=torch.Generator().manual_seed(3), dtype=w.dtype) >= 0.5
    torch.testing.assert_close(a, (w * keep / 0.5) @ v)
    assert torch.equal(qkv.attention(q, k, v, dropout_p=0.0), qkv.attention(q, k, v))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_accumulates_in_fp32_and_returns_input_dtype(dtype):
    q, k, v = rand(1, 2, 2, 33, 40, 16, dtype=torch.float32)
    out, lse = qkv.attention(q.to(dtype), k.to(dtype), v.to(dtype), mask=masks.causal(), return_lse=True)
    assert out.dtype == dtype and lse.dtype == torch.float32
    ref = qkv.attention(q.to(dtype).double(), k.to(dtype).double(), v.to(dtype).double(), mask=masks.causal())
    # fp32 accumulation: the only error left is the final rounding to the low-precision dtype
    eps = torch.finfo(dtype).eps
    assert (out.double() - ref).abs().max() <= eps * ref.abs().max() + 1e-6


def test_steps_are_consistent():
    q, k, v = rand(1, 2, 2, 4, 6, 8)
    s = qkv.steps(q, k, v, mask=masks.causal(), score_mod=mods.softcap(2.0), scale=0.5)
    torch.testing.assert_close(s.scores, q @ k.transpose(-2, -1))
    torch.testing.assert_close(s.scaled, s.scores * 0.5)
    torch.testing.assert_close(s.modified, 2.0 * torch.tanh(s.scaled / 2.0))
    assert torch.all(s.masked[..., 0, 4:] == float("-inf")) and torch.all(s.masked[..., 3, :] > -1e9)
    torch.testing.assert_close(s.weights, torch.softmax(s.masked, -1))
    torch.testing.assert_close(s.output, s.weights @ v)
    torch.testing.assert_close(s.lse, torch.logsumexp(s.masked, -1))


@pytest.mark.parametrize("case", ["causal+alibi", "window+softcap", "padding+bias", "gqa+document"])
def test_gradcheck_fp64(case):
    torch.manual_seed(1)
    H, Hkv = (4, 2) if case == "gqa+document" else (2, 2)
    q, k, v = rand(2, H, Hkv, 5, 6, 4, Dv=3, requires_grad=True)
    extra = ()
    if case == "causal+alibi":
        mask, mod = masks.causal(), mods.alibi(mods.alibi_slopes(H))
    elif case == "window+softcap":
        mask, mod = masks.sliding_window(2, 1), mods.softcap(1.5)
    elif case == "padding+bias":
        bias = torch.randn(2, 1, 5, 6, dtype=F64, requires_grad=True)
        mask, mod, extra = masks.padding(torch.tensor([6, 3]), q_lengths=torch.tensor([5, 4])), None, (bias,)
    else:
        mask, mod = masks.document(torch.tensor([0, 0, 1, 1, 1]), torch.tensor([0, 0, 0, 1, 1, 1])), None

    def f(q, k, v, *extra):
        m = mods.bias(extra[0]) if extra else mod
        out, lse = qkv.attention(q, k, v, mask=mask, score_mod=m, return_lse=True)
        return out, lse.masked_fill(torch.isinf(lse), 0.0)

    assert torch.autograd.gradcheck(f, (q, k, v, *extra))
