"""Issue 11 regressions: one NaN rule for every engine, masked stays masked at any finite scale, empty
problems and broadcast lengths the same everywhere, and clear errors from score mods and mask functions."""

import pytest
import torch

from qkv import attention, implementations, masks, mods

ENGINES = ["reference", "tiled", "sdpa", "auto"]
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def _inputs(B=2, H=2, L=64, D=8, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, L, D, generator=g).to(dtype) for _ in range(3)]


def _grads(impl, q, k, v, mask, **kw):
    q, k, v = (t.detach().clone().requires_grad_() for t in (q, k, v))
    out = attention(q, k, v, mask=mask, impl=impl, **kw)
    torch.where(torch.isnan(out), 0.0, out).float().sum().backward()
    return out.detach(), q.grad, k.grad, v.grad


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("impl", ENGINES)
def test_nan_in_padded_keys_never_reaches_outputs_or_gradients(impl, dtype):
    q, k, v = _inputs(dtype=dtype)
    lengths = torch.tensor([50, 37])
    for b, n in enumerate(lengths.tolist()):
        k[b, :, n:] = float("nan")
        v[b, :, n:] = float("inf")
    out, dq, dk, dv = _grads(impl, q, k, v, masks.padding(lengths))
    assert torch.isfinite(out).all() and torch.isfinite(dq).all()
    for b, n in enumerate(lengths.tolist()):
        assert torch.isfinite(dk[b, :, :n]).all() and torch.isfinite(dv[b, :, :n]).all()
        assert (dk[b, :, n:] == 0).all() and (dv[b, :, n:] == 0).all()  # excluded: no gradient either
    clean = [t.clone() for t in (q, k, v)]
    for b, n in enumerate(lengths.tolist()):
        clean[1][b, :, n:] = 0
        clean[2][b, :, n:] = 0
    ref = attention(*clean, mask=masks.padding(lengths), impl="reference")
    torch.testing.assert_close(out, ref, rtol=2e-2 if dtype in (torch.float16, torch.bfloat16) else 1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", ["reference", "tiled", "auto"])
@pytest.mark.parametrize("L", [64, 700])
def test_an_attended_nan_poisons_exactly_the_rows_that_attend_it(impl, L):
    q, k, v = _inputs(B=1, H=2, L=L)
    j = L // 3
    v[0, 1, j] = float("nan")  # head 1 only
    out = attention(q, k, v, mask=masks.causal(), impl=impl)
    rows = torch.isnan(out).any(-1)[0]  # (H, L)
    assert not rows[0].any()
    assert torch.equal(rows[1], torch.arange(L) >= j)  # causal: rows j.. attend key j, rows before do not


@pytest.mark.parametrize("impl", ["reference", "tiled", "sdpa", "auto"])
def test_a_nan_query_row_is_nan_when_it_attends_and_zero_when_it_attends_nothing(impl):
    q, k, v = _inputs(B=2, H=1, L=32)
    q[:, 0, 5] = float("nan")
    out = attention(q, k, v, mask=masks.padding(torch.tensor([32, 20])), impl=impl)
    assert torch.isnan(out[:, 0, 5]).all() and torch.isfinite(out[:, 0, torch.arange(32) != 5]).all()
    if impl != "sdpa":  # sdpa declines padding that empties a row
        out = attention(q, k, v, mask=masks.padding(torch.tensor([32, 20]), q_lengths=torch.tensor([32, 4])), impl=impl)
        assert torch.isnan(out[0, 0, 5]).all() and (out[1, 0, 5] == 0).all()  # batch 1: row 5 is padding


@pytest.mark.parametrize("scale", [1e10, 1e30, 1e36])
@pytest.mark.parametrize(
    "mask",
    [masks.sliding_window(4, 4), masks.document(torch.arange(300) // 7), masks.padding(torch.tensor([150]))],
    ids=["window", "document", "padding"],
)
def test_masked_stays_masked_at_extreme_scales(mask, scale):
    q, k, v = _inputs(B=1, H=1, L=300, D=8)
    ref = attention(q.double(), k.double(), v.double(), mask=mask, scale=scale, impl="reference")
    for impl in ("tiled", "auto"):
        out = attention(q, k, v, mask=mask, scale=scale, impl=impl)
        torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("L", [520, 600, 1000])
def test_a_bias_without_a_mask_runs_in_every_engine(L):
    q, k, v = _inputs(B=1, H=1, L=L, D=16)
    bias = torch.randn(L, L)
    ref = attention(q, k, v, score_mod=mods.bias(bias), impl="reference")
    for impl in ("tiled", "auto"):
        torch.testing.assert_close(attention(q, k, v, score_mod=mods.bias(bias), impl=impl), ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("impl", ["reference", "tiled", "auto"])
def test_no_keys_with_a_padding_mask(impl):
    q = torch.randn(2, 2, 3, 8)
    k = v = torch.randn(2, 2, 0, 8)
    out, lse = attention(q, k, v, mask=masks.padding(torch.tensor([0, 0])), impl=impl, return_lse=True)
    assert (out == 0).all() and torch.isinf(lse).all()


def test_sdpa_declines_an_empty_problem_with_a_reason():
    q, k = torch.randn(2, 2, 3, 8), torch.randn(2, 2, 0, 8)
    with pytest.raises(ValueError, match="empty problem"):
        attention(q, k, k, mask=masks.padding(torch.tensor([0, 0])), impl="sdpa")


@pytest.mark.parametrize("impl", ["auto", *implementations()])
def test_per_batch_lengths_must_match_the_batch(impl):
    q = torch.randn(2, 1, 3, 8)
    with pytest.raises(ValueError, match=r"is for batch 1 but the attention has batch 2.*shape \(2,\)"):
        attention(q, q, q, mask=masks.padding(torch.tensor([2])), impl=impl)


@pytest.mark.parametrize("impl", ["reference", "tiled"])
@pytest.mark.parametrize(
    "bad,match",
    [
        (lambda s, b, h, q, kv: torch.ones(3, 3), r"returned shape \(3, 3\).*broadcasts to the block"),
        (lambda s, b, h, q, kv: q >= kv, "returned dtype torch.bool, expected a floating-point tensor"),
        (lambda s, b, h, q, kv: 1.0, "must return a tensor, got float"),
    ],
    ids=["shape", "dtype", "not a tensor"],
)
def test_a_bad_score_mod_is_named_in_a_value_error(impl, bad, match):
    q = torch.randn(1, 1, 600, 8, requires_grad=True)
    with pytest.raises(ValueError, match=match):
        attention(q, q, q, score_mod=bad, impl=impl)
    with torch.no_grad(), pytest.raises(ValueError, match=match):
        attention(q, q, q, score_mod=bad, impl=impl)


@pytest.mark.parametrize("impl", ["reference", "tiled"])
def test_a_bad_mask_function_is_named_in_a_value_error(impl):
    q = torch.randn(1, 1, 600, 8)
    with pytest.raises(ValueError, match=r"mask function .* returned shape \(3, 3\)"):
        attention(q, q, q, mask=masks.from_function(lambda b, h, qi, ki: torch.ones(3, 3, dtype=torch.bool)), impl=impl)
    with pytest.raises(ValueError, match="must return a bool tensor, got torch.float32 from from_function"):
        attention(q, q, q, mask=masks.from_function(lambda b, h, qi, ki: (qi >= ki).float()), impl=impl)


def test_a_score_mod_that_fails_on_a_block_says_so():
    table = torch.zeros(10, requires_grad=True)
    q = torch.randn(1, 1, 64, 8)
    for impl in ("reference", "tiled"):
        with pytest.raises(ValueError, match="failed on a .* score block"):
            attention(q, q, q, score_mod=lambda s, b, h, qi, ki: s + table[qi + 100], impl=impl)
        with torch.no_grad(), pytest.raises(ValueError, match="failed on a .* score block"):
            attention(q, q, q, score_mod=lambda s, b, h, qi, ki: s + table[qi + 100], impl=impl)
