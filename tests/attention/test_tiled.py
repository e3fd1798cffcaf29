"""impl='tiled' against the reference (fp64 oracle, FlashAttention's error rule): outputs, lse and
gradients of q, k, v (and a bias tensor) for every mask kind, score mods, GQA/MQA, odd sizes,
fully-masked rows, NaN-poisoned padding, low precision, and the block plan."""

import os

import pytest
import torch

from qkv import masks, mods
from qkv.core import attention
from qkv.core.engines.tiled import tiled_plan_for
from qkv.core.inputs import check_inputs

from .oracle import F32, F64, FUSED_GRAD_FLOOR, compare_to_reference, rand


def doc_ids(L, seed=0):
    """Sorted document ids of random lengths (packed sequences), shape (L,)."""
    g = torch.Generator().manual_seed(seed)
    cuts = torch.randint(0, 5, (L,), generator=g) == 0
    return torch.cumsum(cuts.long(), 0)


MASKS = {  # name -> fn(B, Hq, Lq, Lk) -> mask
    "none": lambda B, H, lq, lk: None,
    "causal_bottom_right": lambda B, H, lq, lk: masks.causal(),
    "causal_top_left": lambda B, H, lq, lk: masks.causal(align="top_left"),
    "sliding_window": lambda B, H, lq, lk: masks.sliding_window(50),
    "sliding_window_sym_top_left": lambda B, H, lq, lk: masks.sliding_window(20, 30, align="top_left"),
    "padding": lambda B, H, lq, lk: masks.padding(
        torch.tensor([lk, max(lk // 3, 1)])[:B], torch.tensor([lq, max(lq // 2, 1)])[:B]
    ),
    "document": lambda B, H, lq, lk: masks.document(doc_ids(lq), doc_ids(lk)),
    "prefix_lm": lambda B, H, lq, lk: masks.prefix_lm(min(lk, 40)),
    "from_function": lambda B, H, lq, lk: masks.from_function(lambda b, h, q, kv: (q * 7 + kv * 3) % 5 != 0),
    "bool_tensor": lambda B, H, lq, lk: torch.rand(B, 1, lq, lk, generator=torch.Generator().manual_seed(3)) > 0.3,
    "document_and_causal": lambda B, H, lq, lk: masks.document(doc_ids(lq), doc_ids(lk)) & masks.causal(),
    "padding_and_window": lambda B, H, lq, lk: (
        masks.padding(torch.tensor([lk, lk // 2])[:B]) & masks.sliding_window(64)
    ),
    "not_causal": lambda B, H, lq, lk: ~masks.causal(align="top_left"),
    "head_dependent": lambda B, H, lq, lk: masks.from_function(lambda b, h, q, kv: kv <= q + 3 * h, num_heads=H),
    "ring_offset_causal": lambda B, H, lq, lk: masks.offset(masks.causal(), 100, 37, lq + 100, lk + 37),
}
SIZES = [(1, 97), (97, 97), (61, 130), (1025, 1025)]


@pytest.mark.parametrize("dv", ["same", "other"], ids=["fused D=Dv", "pytorch tiles Dv!=D"])
@pytest.mark.parametrize("lq,lk", SIZES, ids=lambda s: str(s))
@pytest.mark.parametrize("kind", list(MASKS))
def test_tiled_matches_reference(kind, lq, lk, dv):
    if kind == "document" or kind == "document_and_causal":
        if lq != lk:
            pytest.skip("document ids are per position: self-attention only")
    if lq * lk > 10**6 and kind not in (
        "none",
        "causal_bottom_right",
        "sliding_window",
        "document_and_causal",
        "padding",
        "bool_tensor",
    ):
        pytest.skip("the L=1025 sweep covers the structurally different masks")
    B, Hq, Hkv, D = 2, 4, 2, 59
    q, k, v = rand(B, Hq, Hkv, lq, lk, D, D if dv == "same" else 24, seed=lq + lk)
    compare_to_reference(
        "tiled", q, k, v, mask=MASKS[kind](B, Hq, lq, lk), grad_rel_floor=FUSED_GRAD_FLOOR if dv == "same" else 0.0
    )


@pytest.mark.parametrize("hq,hkv", [(8, 2), (8, 1), (3, 3)])
@pytest.mark.parametrize("kind", ["none", "causal_bottom_right", "sliding_window", "head_dependent"])
def test_gqa_and_mqa(hq, hkv, kind):
    q, k, v = rand(1, hq, hkv, 97, 130, 32)
    compare_to_reference("tiled", q, k, v, mask=MASKS[kind](1, hq, 97, 130), grad_rel_floor=FUSED_GRAD_FLOOR)


def _mods(H, lq, lk, dtype, bias_grad):
    g = torch.Generator().manual_seed(5)
    bias = torch.randn(1, H, lq, lk, dtype=dtype, generator=g).requires_grad_(bias_grad)
    scale = torch.tensor(0.05, dtype=dtype)
    return {
        "alibi": (mods.alibi(mods.alibi_slopes(H)), ()),
        "alibi_top_left": (mods.alibi(mods.alibi_slopes(H), align="top_left"), ()),
        "softcap": (mods.softcap(2.0), ()),
        "bias": (mods.bias(bias), (bias,) if bias_grad else ()),
        "callable": (lambda s, b, h, q, kv: s + scale.to(s.dtype) * torch.cos((q - kv).to(s.dtype)), ()),
        "alibi_then_softcap": (mods.compose(mods.alibi(mods.alibi_slopes(H)), mods.softcap(3.0)), ()),
    }


@pytest.mark.parametrize("bias_grad", [False, True], ids=["no bias grad", "bias grad"])
@pytest.mark.parametrize("kind", ["none", "causal_bottom_right", "sliding_window", "padding"])
@pytest.mark.parametrize("mod", ["alibi", "alibi_top_left", "softcap", "bias", "callable", "alibi_then_softcap"])
def test_score_mods(mod, kind, bias_grad):
    if bias_grad and mod != "bias":
        pytest.skip("only the bias mod has a tensor to differentiate")
    B, Hq, Hkv, lq, lk = 2, 4, 2, 97, 130
    q, k, v = rand(B, Hq, Hkv, lq, lk, 59)
    m64, extra64 = _mods(Hq, lq, lk, F64, bias_grad)[mod]
    m32, extra32 = _mods(Hq, lq, lk, F32, bias_grad)[mod]
    fused = mod in ("alibi", "alibi_top_left") or (mod == "bias" and not bias_grad)
    compare_to_reference(
        "tiled",
        q,
        k,
        v,
        mask=MASKS[kind](B, Hq, lq, lk),
        score_mod=m64,
        mod32=m32,
        extra64=extra64,
        extra32=extra32,
        grad_rel_floor=FUSED_GRAD_FLOOR if fused else 0.0,
    )


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["causal_bottom_right", "sliding_window"])
def test_alibi_long(kind):
    """ALiBi's shared pattern at L = 1025 (the fused path with one precomputed Toeplitz pattern)."""
    q, k, v = rand(1, 4, 4, 1025, 1025, 64)
    compare_to_reference(
        "tiled",
        q,
        k,
        v,
        mask=MASKS[kind](1, 4, 1025, 1025),
        score_mod=mods.alibi(mods.alibi_slopes(4)),
        grad_rel_floor=FUSED_GRAD_FLOOR,
    )


@pytest.mark.parametrize("dv", [16, 8])
def test_fully_masked_rows_give_zero_output_minus_inf_lse_and_zero_grad(dv):
    """Rows that may attend nothing: bottom-right causal with Lq > Lk, and padded queries."""
    lq, lk = 40, 25
    mask = masks.causal() & masks.padding(torch.tensor([lk, 10]), torch.tensor([lq, 30]))
    q, k, v = rand(2, 2, 2, lq, lk, 16, dv)
    q.requires_grad_(True)
    out, lse = attention(q, k, v, mask=mask, impl="tiled", return_lse=True)
    empty = ~mask.dense(2, 1, lq, lk).any(-1).expand(2, 2, lq)  # (B, H, Lq)
    assert empty.sum() > 0
    assert torch.all(out[empty] == 0) and torch.all(lse[empty] == float("-inf"))
    assert torch.isfinite(out).all()
    (g,) = torch.autograd.grad(out.sum() + torch.where(empty, 0, lse).sum(), [q])
    assert torch.isfinite(g).all() and torch.all(g[empty] == 0)
    compare_to_reference("tiled", q.detach(), k, v, mask=mask, grad_rel_floor=FUSED_GRAD_FLOOR)


@pytest.mark.parametrize("dv", [32, 24], ids=["fused", "pytorch tiles"])
@pytest.mark.parametrize("extra", ["padding", "padding_and_causal", "padding_and_window"])
def test_nan_poisoned_padding_never_leaks(extra, dv):
    """Keys/values beyond the padding (and padded queries) are NaN: outputs and gradients stay exact."""
    B, H, L = 2, 2, 300
    kvl, ql = torch.tensor([300, 123]), torch.tensor([300, 77])
    mask = masks.padding(kvl, ql)
    if extra == "padding_and_causal":
        mask = mask & masks.causal()
    elif extra == "padding_and_window":
        mask = mask & masks.sliding_window(40)
    q, k, v = rand(B, H, H, L, L, 32, dv)
    pad_k = torch.arange(L).view(1, 1, L, 1) >= kvl.view(B, 1, 1, 1)
    pad_q = torch.arange(L).view(1, 1, L, 1) >= ql.view(B, 1, 1, 1)
    poisoned = [
        q.masked_fill(pad_q, float("nan")),
        k.masked_fill(pad_k, float("nan")),
        v.masked_fill(pad_k, float("nan")),
    ]
    clean = [q.masked_fill(pad_q, 0.0), k.masked_fill(pad_k, 0.0), v.masked_fill(pad_k, 0.0)]
    outs = []
    for tensors in (poisoned, clean):
        t = [x.float().requires_grad_(True) for x in tensors]
        out, lse = attention(*t, mask=mask, impl="tiled", return_lse=True)
        loss = out.sum() + torch.where(torch.isfinite(lse), lse, 0).sum()
        outs.append([out, lse, *torch.autograd.grad(loss, t)])
    for name, a, b in zip(["out", "lse", "dq", "dk", "dv"], *outs):
        a = torch.where(torch.isnan(a) & (pad_q if name == "dq" else pad_k if name in ("dk", "dv") else False), 0, a)
        assert not torch.isnan(a).any(), f"NaN leaked into {name}"
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=f"{name} depends on the padding's content")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_computes_in_fp32_and_returns_input_dtype(dtype):
    q, k, v = rand(1, 2, 2, 97, 97, 32, dtype=dtype)
    out, lse = attention(q, k, v, mask=masks.sliding_window(20), impl="tiled", return_lse=True)
    ref, ref_lse = attention(
        q.float(), k.float(), v.float(), mask=masks.sliding_window(20), impl="reference", return_lse=True
    )
    assert out.dtype == dtype and lse.dtype == F32
    torch.testing.assert_close(out, ref.to(dtype), rtol=0, atol=2 * torch.finfo(dtype).eps)
    torch.testing.assert_close(lse, ref_lse, rtol=1e-5, atol=1e-5)


def test_fp64_is_exact_to_rounding():
    q, k, v = rand(2, 4, 2, 200, 300, 16)
    for mask in (None, masks.causal(), masks.sliding_window(30), masks.document(doc_ids(200), doc_ids(300))):
        out, lse = attention(q, k, v, mask=mask, impl="tiled", return_lse=True)
        ref, ref_lse = attention(q, k, v, mask=mask, impl="reference", return_lse=True)
        assert out.dtype == F64 and lse.dtype == F64
        torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(lse, ref_lse, rtol=1e-12, atol=1e-12)


def test_empty_keys_and_queries():
    q, k, v = rand(1, 2, 2, 5, 0, 8)
    out, lse = attention(q, k, v, impl="tiled", return_lse=True)
    assert torch.all(out == 0) and torch.all(lse == float("-inf")) and out.shape == (1, 2, 5, 8)
    q, k, v = rand(1, 2, 2, 0, 5, 8)
    assert attention(q, k, v, impl="tiled").shape == (1, 2, 0, 8)


def test_gradcheck_fp64():
    """Analytic gradients of the custom autograd.Function against finite differences."""
    q, k, v = (t.requires_grad_(True) for t in rand(1, 2, 1, 9, 13, 4))
    for mask, mod in (
        (masks.sliding_window(4), None),
        (masks.causal(), mods.softcap(1.5)),
        (masks.padding(torch.tensor([7]), torch.tensor([5])), mods.alibi(mods.alibi_slopes(2))),
    ):

        def f(q, k, v):
            out, lse = attention(q, k, v, mask=mask, score_mod=mod, impl="tiled", return_lse=True)
            return out, torch.where(torch.isfinite(lse), lse, 0)

        assert torch.autograd.gradcheck(f, (q, k, v))


# --------------------------------------------------------------------------- the block plan
def _plan(mask, L, H=8, mod=None, D=64):
    q = torch.zeros(1, H, L, D)
    return tiled_plan_for(check_inputs(q, q, q, mask=mask, score_mod=mod))


@pytest.mark.parametrize("L", [1024, 4096, 16384])
def test_plan_cost_follows_attended_pairs(L):
    """Block-sparse masks compute a bounded multiple of the pairs they keep, never the full square."""
    window = _plan(masks.sliding_window(256), L)
    kept = sum(min(i, 256) + 1 for i in range(L))
    assert kept <= window.pairs <= 2 * kept
    doc = _plan(masks.document(torch.arange(L) // (L // 8)), L)
    assert doc.pairs == L * L // 8  # the diagonal blocks exactly
    causal = _plan(masks.causal(), L)
    assert len(causal.groups) == 1 and causal.groups[0].kind == "causal"  # one is_causal kernel call
    assert _plan(None, L).pairs == L * L


def test_plan_skips_empty_blocks():
    assert _plan(masks.padding(torch.tensor([0])), 512).pairs == 0
    assert _plan(masks.causal(), 1).pairs == 1
    # a decoding step (one query, bottom-right causal) sees every key: one unmasked segment
    q, k = torch.zeros(1, 2, 1, 8), torch.zeros(1, 2, 500, 8)
    plan = tiled_plan_for(check_inputs(q, k, k, mask=masks.causal()))
    assert [g.kind for g in plan.groups] == ["full"] and plan.pairs == 500


# --------------------------------------------------------------------------- memory is O(N)
def _status_mb(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith(field))


@pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK), reason="needs Linux /proc/self/clear_refs")
@pytest.mark.parametrize(
    "L,mask,mod",
    [
        (16384, masks.sliding_window(256), None),
        (8192, masks.causal(), mods.alibi(mods.alibi_slopes(1))),
        (16384, masks.document(torch.arange(16384) // 1000), None),
    ],
    ids=["window-16384", "causal-alibi-8192", "document-16384"],
)
def test_never_allocates_the_score_matrix(L, mask, mod):
    """Forward + backward peak memory stays far below one fp32 Lq x Lk matrix (1 GiB / 256 MiB here):
    what the engine holds at once is bounded by its chunk budget, whatever the length."""
    q, k, v = (torch.randn(1, 1, L, 64, requires_grad=True) for _ in range(3))
    square_mb = L * L * 4 / 2**20
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak resident set size (VmHWM)
    base = _status_mb("VmRSS")
    out = attention(q, k, v, mask=mask, score_mod=mod, impl="tiled")
    out.sum().backward()
    grown = _status_mb("VmHWM") - base
    assert grown < square_mb / 4, f"peak grew by {grown:.0f} MB; one Lq x Lk matrix is {square_mb:.0f} MB"


def test_plan_cache_follows_in_place_changes_of_mask_tensors():
    """Plans are reused for the same mask object, but never after its tensors changed in place."""
    lengths = torch.tensor([50, 10])
    mask = masks.padding(lengths) & masks.sliding_window(8)
    q, k, v = rand(2, 2, 2, 60, 60, 16)
    first = attention(q, k, v, mask=mask, impl="tiled")
    torch.testing.assert_close(attention(q, k, v, mask=mask, impl="tiled"), first, rtol=0, atol=0)
    lengths[1] = 40  # the padding mask holds this very tensor
    torch.testing.assert_close(
        attention(q, k, v, mask=mask, impl="tiled"), attention(q, k, v, mask=mask, impl="reference")
    )
