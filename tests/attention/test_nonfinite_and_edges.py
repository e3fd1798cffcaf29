"""Issue 11 regressions: one NaN rule for every engine, masked stays masked at any finite scale, empty
problems and broadcast lengths the same everywhere, and clear errors from score mods and mask functions."""

import pytest
import torch

from qkv import attention, implementations, masks, merge, mods
from qkv.core import nonfinite as nonfinite_rule

from .nonfinite_oracle import assert_rule, expected

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


# Issue 22: one rule without exceptions -- mask=None, masks.full() and every other mask, every engine and dtype,
# forward and backward, against the rule computed independently (tests/attention/nonfinite_oracle.py).

INF, NAN = float("inf"), float("nan")
TOL = {torch.float64: 1e-9, torch.float32: 2e-5, torch.float16: 2e-2, torch.bfloat16: 5e-2}


def _nan_rows(out):
    return torch.isnan(out).any(-1).flatten().nonzero().flatten().tolist()


def _lse_engines():
    return [i for i in ENGINES if i != "sdpa"]


@pytest.mark.parametrize("impl", ENGINES)
@pytest.mark.parametrize("mask", [None, masks.causal()], ids=["no mask", "causal"])
@pytest.mark.parametrize("L", [4, 300])
def test_a_nan_query_row_is_nan_in_every_engine_at_every_size(impl, mask, L):
    """Issue 22: L=4 gave 0 under tiled/sdpa/auto and NaN under reference; the reference's lse was -inf."""
    q, k, v = _inputs(B=1, H=1, L=L)
    q[0, 0, 1] = NAN
    out = attention(q, k, v, mask=mask, impl=impl)
    assert _nan_rows(out) == [1]
    want, want_lse, _ = expected(q, k, v, mask, torch.zeros_like(out))
    assert_rule(impl, out, want, 1e-5)
    if impl != "sdpa":
        lse = attention(q, k, v, mask=mask, impl=impl, return_lse=True)[1]
        assert_rule(f"{impl} lse", lse, want_lse, 1e-5)
        assert torch.isnan(lse[0, 0, 1])


@pytest.mark.parametrize("impl", _lse_engines())
def test_an_attended_key_scoring_minus_inf_poisons_the_row_that_attends_it(impl):
    """Issue 22's reproducer: k[0, 0, 0, 0] = -inf; the bool mask admits key 0 for row 0 only."""
    q, k, v = (torch.randn(1, 1, 2, 4) for _ in range(3))
    k[0, 0, 0, 0] = -INF
    allowed = torch.tensor([[True, True], [False, True]])
    out, lse = attention(q, k, v, mask=allowed, impl=impl, return_lse=True)
    assert torch.isnan(out[0, 0, 0]).all() and torch.isnan(lse[0, 0, 0])
    torch.testing.assert_close(out[0, 0, 1], v[0, 0, 1])  # row 1 attends key 1 alone
    torch.testing.assert_close(lse[0, 0, 1], (q[0, 0, 1] @ k[0, 0, 1]) / 2)


@pytest.mark.parametrize("impl", ENGINES)
@pytest.mark.parametrize("where,value", [("k", -INF), ("k", INF), ("v", INF), ("v", NAN)])
def test_no_mask_and_a_full_mask_give_the_same_result(impl, where, value):
    """Issue 22: k=-inf gave NaN rows [0, 2] without a mask and [0, 1, 2, 3] with full(); v=+inf gave inf / NaN."""
    q, k, v = (torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(3)) for _ in range(3))
    (k if where == "k" else v)[0, 0, 0, 0] = value
    plain = attention(q, k, v, impl=impl)
    full = attention(q, k, v, mask=masks.full(), impl=impl)
    assert _nan_rows(plain) == _nan_rows(full) == [0, 1, 2, 3]  # every row attends key 0
    assert torch.isnan(plain).all() and torch.isnan(full).all()


_MASKS = {
    "none": lambda L: None,
    "full": lambda L: masks.full(),
    "causal": lambda L: masks.causal(),
    "window": lambda L: masks.sliding_window(3, 1),
    "padding": lambda L: masks.padding(torch.tensor([L - 5, L // 2]), q_lengths=torch.tensor([L, L - 7])),
    "document": lambda L: masks.document(torch.arange(2 * L).view(2, L) % L // 9),
}


@pytest.mark.parametrize("mask_name", list(_MASKS))
@pytest.mark.parametrize("impl", ENGINES)
@pytest.mark.parametrize(
    "L,dtype",
    [(40, d) for d in DTYPES] + [(300, torch.float32), (300, torch.bfloat16)],  # 300: the tiled engine's tiles
    ids=lambda x: str(x).replace("torch.", ""),
)
def test_the_rule_forward_and_backward(impl, mask_name, dtype, L):
    """NaN/+-inf in q, k and v at once: out, lse and every gradient as the rule says."""
    B, Hq, Hkv, D = 2, 4, 2, 8
    g = torch.Generator().manual_seed(L)
    q = torch.randn(B, Hq, L, D, generator=g).to(dtype)
    k, v = (torch.randn(B, Hkv, L, D, generator=g).to(dtype) for _ in range(2))
    q[0, 1, 6, 2], q[1, 3, L - 3, 0] = NAN, INF  # batch 1's row L-3 is query padding (attends nothing)
    k[0, 0, 4, 1], k[1, 1, L - 2, 5] = -INF, NAN  # batch 1's key L-2 is key padding
    v[0, 1, L // 2, 3], v[1, 0, 10, 0] = INF, -INF
    mask = _MASKS[mask_name](L)
    dout = torch.randn(B, Hq, L, D, generator=g, dtype=torch.float64)
    want_out, want_lse, want_grads = expected(q, k, v, mask, dout, with_lse=impl != "sdpa")
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    try:
        res = attention(*leaves, mask=mask, impl=impl, return_lse=impl != "sdpa")
    except ValueError as e:
        assert impl == "sdpa" and "cannot run these inputs" in str(e)
        return
    out, lse = res if impl != "sdpa" else (res, None)
    loss = (out * dout.to(out.dtype)).sum()
    if lse is not None:
        loss = loss + torch.where(torch.isfinite(lse), lse, 0.0).sum()
    loss.backward()
    tol = TOL[dtype]
    assert_rule(f"{impl} out", out, want_out, tol)
    if lse is not None:
        assert_rule(f"{impl} lse", lse, want_lse, tol)
    for name, leaf, want in zip("qkv", leaves, want_grads):
        assert torch.isfinite(leaf.grad).all(), f"d{name} is not finite"
        assert_rule(f"{impl} d{name}", leaf.grad, want, tol * 10)
    if mask_name in ("none", "full"):  # every row attends a bad key in every head: the whole output is NaN
        assert torch.isnan(out).all()


@pytest.mark.parametrize("nonfinite", [False, True], ids=["finite", "non-finite"])
@pytest.mark.parametrize("mask_name", ["none", "causal", "window", "padding"])
@pytest.mark.parametrize("impl", ENGINES)
def test_the_branch_free_rule_gives_what_eager_gives(impl, mask_name, nonfinite, monkeypatch):
    """torch.compile traces attend_with_rule (no host reads); eager skips it for finite inputs. Forcing the
    branch-free path (as if compiling) gives bit-identical outputs and gradients."""
    q, k, v = _inputs(B=2, H=2, L=300)
    if nonfinite:
        q[0, 1, 7, 0], k[1, 0, 280, 2], v[0, 0, 100, 1] = NAN, INF, -INF
    mask = _MASKS[mask_name](300)
    if impl == "sdpa" and mask_name in ("window", "padding"):
        pytest.skip("sdpa declines this mask (covered by the other engines)")

    def run():
        leaves = [t.detach().clone().requires_grad_() for t in (q, k, v)]
        out = attention(*leaves, mask=mask, impl=impl)
        torch.where(torch.isnan(out), 0.0, out).sum().backward()
        return [out.detach(), *(t.grad for t in leaves)]

    eager = run()
    monkeypatch.setattr(nonfinite_rule, "_is_compiling", lambda: True)
    monkeypatch.setattr(nonfinite_rule, "all_finite", lambda inp: pytest.fail("a host read under compile"))
    branch_free = run()
    for a, b in zip(eager, branch_free):
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("impl", _lse_engines())
@pytest.mark.parametrize("value", [INF, NAN, -INF])
@pytest.mark.parametrize("L", [4, 600])
def test_scores_follow_ieee_nan_and_plus_inf_poison_minus_inf_is_weight_zero(impl, value, L):
    """A score mod's +inf/NaN on an attended pair: out and lse NaN (lse never +inf); -inf: weight 0; masked
    pairs never matter, whatever their score."""
    q, k, v = _inputs(B=1, H=1, L=L)
    bias = torch.zeros(L, L)
    bias[2, 1] = bias[1, 3] = value  # (1, 3) is above the diagonal: masked by causal
    for mask in (None, masks.causal(align="top_left")):
        out, lse = attention(q, k, v, mask=mask, score_mod=mods.bias(bias), impl=impl, return_lse=True)
        ref_out, ref_lse = attention(
            q.double(), k.double(), v.double(), mask=mask, score_mod=mods.bias(bias.double()), return_lse=True
        )
        rows = [] if value == -INF else ([2] if mask is not None else [1, 2])
        assert _nan_rows(out) == rows and torch.isnan(lse).flatten().nonzero().flatten().tolist() == rows
        assert not torch.isinf(lse).any()
        assert_rule(f"{impl} out", out, ref_out, 1e-5)
        assert_rule(f"{impl} lse", lse, ref_lse, 1e-5)


@pytest.mark.parametrize("impl", ENGINES)
def test_finite_inputs_whose_score_overflows_give_a_nan_row(impl):
    q, k, v = _inputs(B=1, H=1, L=600)
    q[0, 0, 2], k[0, 0, 1] = 1e20, 1e20  # q.k = 8e40 > float32 max: a +inf score for row 2 only
    out = attention(q, k, v, mask=masks.causal(align="top_left"), impl=impl)
    assert _nan_rows(out) == [2]
    if impl != "sdpa":
        lse = attention(q, k, v, mask=masks.causal(align="top_left"), impl=impl, return_lse=True)[1]
        assert torch.isnan(lse).flatten().nonzero().flatten().tolist() == [2]


def test_merge_keeps_a_nan_part_nan():
    """A part whose row is NaN (the rule's lse NaN) makes the merged row NaN, not -inf or finite."""
    q, k, v = _inputs(B=1, H=1, L=8)
    k[0, 0, 6, 0] = NAN
    a = attention(q, k[:, :, :4], v[:, :, :4], return_lse=True)
    b = attention(q, k[:, :, 4:], v[:, :, 4:], return_lse=True)
    out, lse = merge([a, b])
    assert torch.isnan(out).all() and torch.isnan(lse).all()
    whole = attention(q, k, v, return_lse=True)
    assert torch.isnan(whole[0]).all() and torch.isnan(whole[1]).all()


@pytest.mark.parametrize("mask_name", ["none", "full", "causal", "window", "padding"])
@pytest.mark.parametrize("impl", ["reference", "tiled"])
def test_the_o_of_l_rows_equal_the_indicator_pass(impl, mask_name):
    """Bands and key padding find the NaN rows by prefix sums; the same mask as a bool tensor takes the
    indicator pass. Both must name the same rows (and give the same output)."""
    B, L = 2, 300
    q, k, v = _inputs(B=B, H=2, L=L)
    q[0, 1, 7, 0], k[1, 0, 280, 2], v[0, 0, 100, 1], k[0, 1, 3, 3] = NAN, INF, -INF, NAN
    mask = _MASKS[mask_name](L)
    if mask_name == "padding":
        mask = masks.padding(torch.tensor([L - 5, L // 2]))  # key padding only: the O(L) path
    dense = masks.as_mask(mask).dense(B, 2, L, L) if mask is not None else torch.ones(L, L, dtype=torch.bool)
    structured = attention(q, k, v, mask=mask, impl=impl)
    as_tensor = attention(q, k, v, mask=dense, impl=impl)
    assert torch.isnan(structured).any()
    torch.testing.assert_close(structured, as_tensor, equal_nan=True, rtol=1e-5, atol=1e-6)
    want = expected(q, k, v, mask, torch.zeros_like(structured))[0]
    assert_rule(impl, structured, want, 1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("mask_name", ["causal", "tensor"])
def test_the_rule_under_torch_compile_fullgraph_gives_what_eager_gives(mask_name):
    """The branch-free rule traced by torch.compile(fullgraph=True): no graph break, and the same NaN rows as eager
    (inductor once simplified a NaN test `t * 0` to 0 and lost every NaN row). ~30 s of compilation on CPU."""
    from qkv.core.engines.reference import reference_forward
    from qkv.core.inputs import AttentionInputs

    mask = masks.causal() if mask_name == "causal" else masks.as_mask(torch.rand(16, 16) > 0.3)

    def run(q, k, v):
        return nonfinite_rule.attend(reference_forward, AttentionInputs(q, k, v, mask, None, 0.5, 0.0, None, True))

    q, k, v = _inputs(B=1, H=2, L=16, D=4)
    k[0, 0, 3, 1], q[0, 1, 5, 0], v[0, 1, 9, 2] = NAN, INF, -INF
    torch._dynamo.reset()
    out, lse = torch.compile(run, fullgraph=True)(q, k, v)
    want, want_lse = run(q, k, v)
    assert torch.isnan(want).any(-1).sum() >= 3
    torch.testing.assert_close(out, want, equal_nan=True, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(lse, want_lse, equal_nan=True, rtol=1e-5, atol=1e-6)
