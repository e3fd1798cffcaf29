"""``impl="flex"``: FlexAttention fed by qkv's block maps, on every available device.

On CPU compiled Flex has no backward and no log-sum-exp: the engine declares forward only there and the tests
check the forward and the refusals; on CUDA the same tests check forward, lse and the gradients of q, k, v and
of a bias tensor. Every Flex compile takes seconds on CPU, so the shapes are few (L = 130: two key blocks, the
second partial) and the family tests are marked ``slow`` (they still run in ``make test``).
"""

from __future__ import annotations

import pytest
import torch

import qkv
from qkv import masks, mods
from qkv.core import registry
from qkv.core.inputs import check_inputs

from .oracle import assert_fa_rule

pytestmark = pytest.mark.skipif("flex" not in qkv.implementations(), reason="torch.nn.attention.flex_attention absent")

B, HQ, HKV, L, D = 2, 4, 2, 130, 16


def _ids(device):
    return (torch.arange(L, device=device) * 3) // L  # three sorted documents


def _mask(name, device):
    return {
        "causal": lambda: masks.causal(),
        "window": lambda: masks.sliding_window(20),
        "document & causal": lambda: masks.document(_ids(device)) & masks.causal(),
        "prefix_lm": lambda: masks.prefix_lm(torch.tensor([30, 70])),
        "global_window": lambda: masks.global_window(2, 16, 4),
        "padding (empty rows)": lambda: masks.padding(torch.tensor([100, 0]), torch.tensor([90, 130])),
        "tensor": lambda: torch.rand(L, L, generator=torch.Generator().manual_seed(2)) > 0.4,
        "function": lambda: masks.from_function(lambda b, h, q, kv: (q + kv) % 3 != 0),
        "~causal | window": lambda: ~masks.causal("top_left") | masks.sliding_window(4, 4),
        "none": lambda: None,
    }[name]()


def _mod(name, device):
    g = torch.Generator().manual_seed(5)
    return {
        "alibi": lambda: mods.alibi(mods.alibi_slopes(HQ)),
        "softcap": lambda: mods.softcap(3.0),
        "bias": lambda: mods.bias(torch.randn(1, HQ, L, L, generator=g).to(device)),
        "callable": lambda: lambda s, b, h, q, kv: s + 0.1 * h - 0.01 * (q - kv).abs(),
    }[name]()


def _inputs(device, lq=L, lk=L, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(B, HQ, lq, D, generator=g, dtype=torch.float64)
    k = torch.randn(B, HKV, lk, D, generator=g, dtype=torch.float64)
    v = torch.randn(B, HKV, lk, D, generator=g, dtype=torch.float64)
    return tuple(t.to(device) for t in (q, k, v))


def _check(device, mask=None, mod=None, mod64=None, lq=L, lk=L):
    """Flex vs the fp64 reference by FlashAttention's rule: forward on CPU; forward, lse and gradients on CUDA."""
    q64, k64, v64 = _inputs(device, lq, lk)
    q32, k32, v32 = (t.float() for t in (q64, k64, v64))
    mod64 = mod if mod64 is None else mod64
    if device.type == "cpu":
        got = qkv.attention(q32, k32, v32, mask=mask, score_mod=mod, impl="flex")
        plain = qkv.attention(q32, k32, v32, mask=mask, score_mod=mod, impl="reference")
        ref = qkv.attention(q64, k64, v64, mask=mask, score_mod=mod64, impl="reference")
        assert got.dtype == torch.float32
        assert_fa_rule("out", got, plain, ref)
        return
    from .oracle import compare_to_reference

    # GPU kernels (exp2, other reduction orders) get a floor of 1e-5 -- a wrong mask or mod errs by ~0.1
    compare_to_reference("flex", q64, k64, v64, mask=mask, score_mod=mod64, mod32=mod, floor=1e-5, grad_rel_floor=1e-5)


def test_flex_is_listed_with_a_description():
    assert "FlexAttention" in qkv.implementations()["flex"]


def test_causal_forward_equals_the_reference(device):
    _check(device, masks.causal())


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    [
        "window",
        "document & causal",
        "prefix_lm",
        "global_window",
        "padding (empty rows)",
        "tensor",
        "function",
        "~causal | window",
        "none",
    ],
)
def test_every_mask_family_equals_the_reference(device, name):
    _check(device, _mask(name, device))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["alibi", "softcap", "bias", "callable"])
def test_every_mod_family_equals_the_reference(device, name):
    mod = _mod(name, device)
    mod64 = mods.bias(mod.tensor.double()) if name == "bias" else None
    _check(device, masks.causal(), mod, mod64)


@pytest.mark.slow
def test_fewer_queries_than_keys_bottom_right_with_gqa(device):
    _check(device, masks.causal("bottom_right"), lq=40, lk=L)


def test_padded_query_rows_give_zero_not_nan(device):
    q, k, v = (t.float() for t in _inputs(device))
    out = qkv.attention(q, k, v, mask=_mask("padding (empty rows)", device), impl="flex")
    assert torch.equal(out[1], torch.zeros_like(out[1]))  # batch 1 has no keys: every row attends nothing
    assert bool(torch.isfinite(out).all())


def test_gradients_are_refused_on_cpu_with_the_reason():
    q, k, v = (t.float().requires_grad_() for t in _inputs(torch.device("cpu")))
    with pytest.raises(ValueError, match="FlexAttention does not support backward on CPU"):
        qkv.attention(q, k, v, mask=masks.causal(), impl="flex")
    with torch.no_grad():  # the same inputs without autograd run
        assert qkv.attention(q, k, v, mask=masks.causal(), impl="flex").shape == (B, HQ, L, D)


def test_lse_and_float64_and_dropout_are_declined_on_cpu():
    q, k, v = _inputs(torch.device("cpu"))
    flex = registry.get("flex")
    why = flex.not_supported_reasons(check_inputs(q, k, v, return_lse=True, dropout_p=0.1))
    assert any("float64" in r for r in why), why
    assert any("dropout" in r for r in why), why
    assert any("log-sum-exp" in r for r in why), why


def test_auto_never_picks_flex_on_cpu():
    for n in (8, 600):
        cases = [
            dict(mask=masks.causal()),
            dict(mask=masks.sliding_window(64)),
            dict(mask=masks.document(torch.arange(n) // 100)),
            dict(mask=masks.causal(), score_mod=mods.alibi(mods.alibi_slopes(4))),
            dict(mask=masks.causal(), score_mod=mods.softcap(5.0)),
            dict(),
        ]
        for grads in (False, True):
            q = torch.randn(1, 4, n, 16, requires_grad=grads)
            for kw in cases:
                with torch.set_grad_enabled(grads):
                    chosen = registry.select("auto", check_inputs(q, q, q, **kw)).name
                assert chosen != "flex", (n, grads, kw)


def test_block_mask_comes_from_the_closed_form_block_map_without_evaluating_the_mask():
    from qkv.core.engines.flex import block_mask_for

    m = masks.causal()
    m.evaluate = None  # any pair-by-pair evaluation would fail
    n = 65536
    bm = block_mask_for(m, 1, 1, n, n, "cpu")
    rows = torch.arange(n // 128)
    assert torch.equal(bm.kv_num_blocks.flatten().long(), torch.ones_like(rows))  # the diagonal block is PARTIAL
    assert torch.equal(bm.full_kv_num_blocks.flatten().long(), rows)  # every block left of it is FULL


def test_block_mask_is_cached_per_mask_and_rebuilt_after_an_in_place_change():
    from qkv.core.engines.flex import block_mask_for

    ids = torch.arange(L) // 50
    m = masks.document(ids)
    first = block_mask_for(m, 1, HQ, L, L, "cpu")
    assert block_mask_for(m, 1, HQ, L, L, "cpu") is first
    ids[:] = 0  # one document now: the block map changes
    again = block_mask_for(m, 1, HQ, L, L, "cpu")
    assert again is not first
    assert int(again.full_kv_num_blocks.sum()) > int(first.full_kv_num_blocks.sum())


def test_a_new_mask_of_the_same_structure_does_not_recompile(device):
    from torch._dynamo.utils import counters

    q, k, v = (t.float() for t in _inputs(device))
    qkv.attention(q, k, v, mask=masks.document(_ids(device)), impl="flex")
    before = counters["stats"]["unique_graphs"]
    other = (torch.arange(L, device=device) * 5) // L  # other documents, same structure
    out = qkv.attention(q, k, v, mask=masks.document(other), impl="flex")
    assert counters["stats"]["unique_graphs"] == before
    ref = qkv.attention(q, k, v, mask=masks.document(other), impl="reference")
    assert torch.allclose(out, ref, atol=1e-5)


def test_non_finite_keys_follow_the_one_rule(device):
    q, k, v = (t.float() for t in _inputs(device))
    k[:, :, 100] = float("nan")  # attended by rows >= 100 only (causal)
    v[:, :, 120] = float("inf")  # attended by rows >= 120 only
    out = qkv.attention(q, k, v, mask=masks.causal(), impl="flex")
    nan_rows = torch.isnan(out).any(-1)  # (B, HQ, L)
    want = torch.zeros(L, dtype=torch.bool, device=device)
    want[100:] = True
    assert torch.equal(nan_rows, want.expand_as(nan_rows))
