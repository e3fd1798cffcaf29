"""Randomized differential test: every implementation that accepts an input agrees with the fp64 reference.

Hypothesis draws B, Hq/Hkv, Lq != Lk (0 included), D != Dv, fp32/fp64, random compositions of every mask
(``& | ~``, bool tensors, functions) and every score mod (ALiBi, softcap, bias with -inf, callables holding
tensors in a module, a dict or a global), and compares out, lse and the gradients of q, k, v and of the mod's
tensors. ``QKV_FUZZ_EXAMPLES`` sets the count (CI: 2,000; ``make fuzz``: 20,000).

The non-finite fuzz puts NaN/+-inf into q, k and v (single entries, whole rows, padding garbage) under the same
masks and mods and checks every engine against the documented rule computed independently
(:mod:`.nonfinite_oracle`: a dense mask picks the NaN rows, the fp64 reference on the cleaned inputs gives the
rest), out, lse and gradients. ``QKV_FUZZ_NONFINITE_EXAMPLES`` sets its count (CI: 1,500; ``make fuzz``: 20,000).
"""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import Tensor

from qkv import attention, implementations, masks, mods

from .nonfinite_oracle import assert_rule, expected

EXAMPLES = int(os.environ.get("QKV_FUZZ_EXAMPLES", "2000"))
NONFINITE_EXAMPLES = int(os.environ.get("QKV_FUZZ_NONFINITE_EXAMPLES", "1500"))
GLOBAL_BIAS = torch.zeros(8)  # a module-level tensor a score mod reaches as a global (set per example)


class RelativeBias(torch.nn.Module):
    """T5-style relative-position bias held in a module; its bound method is the score mod."""

    def __init__(self, span: int, g: torch.Generator, dtype):
        super().__init__()
        self.span = span
        self.table = torch.nn.Parameter(torch.randn(2 * span + 1, generator=g, dtype=dtype))

    def score_mod(self, s, b, h, q, kv):
        return s + self.table[(q - kv).clamp(-self.span, self.span) + self.span]


def _leaf(draw, B, Hq, lq, lk, g):
    kind = draw(
        st.sampled_from(["causal", "window", "padding", "document", "prefix", "global", "function", "tensor", "full"])
    )
    align = draw(st.sampled_from(["bottom_right", "top_left"]))
    if kind == "causal":
        return masks.causal(align)
    if kind == "window":
        return masks.sliding_window(draw(st.integers(0, 6)), draw(st.integers(0, 3)), align)
    if kind == "padding":
        return masks.padding(torch.tensor(draw(st.lists(st.integers(0, lk), min_size=B, max_size=B))))
    if kind == "document":
        n = draw(st.integers(1, 3))
        q_ids = torch.sort(torch.randint(0, n, (B, lq), generator=g)).values
        kv_ids = torch.sort(torch.randint(0, n, (B, lk), generator=g)).values
        return masks.document(q_ids, kv_ids)
    if kind == "prefix":
        return masks.prefix_lm(draw(st.integers(0, lk)), align)
    if kind == "global":
        return masks.global_window(draw(st.integers(0, 3)), draw(st.integers(0, 4)), draw(st.integers(0, 2)), align)
    if kind == "function":
        m = draw(st.integers(2, 4))
        return masks.from_function(lambda b, h, q, kv: (q + 2 * kv + h) % m != 0, num_heads=Hq)
    if kind == "tensor":
        shape = draw(st.sampled_from([(lq, lk), (B, 1, lq, lk), (1, Hq, lq, lk)]))
        return torch.rand(shape, generator=g) > 0.3
    return masks.full()


def _mask(draw, B, Hq, lq, lk, g, depth=0):
    op = draw(st.sampled_from(["leaf", "leaf", "none", "and", "or", "not"] if depth < 2 else ["leaf", "none"]))
    if op == "none":
        return None
    if op == "leaf":
        return _leaf(draw, B, Hq, lq, lk, g)
    a = _mask(draw, B, Hq, lq, lk, g, depth + 1)
    a = masks.causal() if a is None else masks.as_mask(a)
    if op == "not":
        return ~a
    b = _mask(draw, B, Hq, lq, lk, g, depth + 1)
    b = masks.sliding_window(2, 2) if b is None else masks.as_mask(b)
    return (a & b) if op == "and" else (a | b)


def _mod(draw, B, Hq, lq, lk, g, dtype):
    """``(score_mod, tensors whose gradients are compared)``."""
    kind = draw(
        st.sampled_from(["none", "none", "alibi", "softcap", "bias", "bias_inf", "module", "dict", "global", "compose"])
    )
    if kind == "alibi":
        return mods.alibi(mods.alibi_slopes(Hq), draw(st.sampled_from(["bottom_right", "top_left"]))), []
    if kind == "softcap":
        return mods.softcap(draw(st.sampled_from([0.5, 2.0, 20.0]))), []
    if kind in ("bias", "bias_inf"):
        t = torch.randn(draw(st.sampled_from([(lq, lk), (B, Hq, lq, lk), (Hq, 1, lk)])), generator=g, dtype=dtype)
        if kind == "bias_inf":
            t = t.masked_fill(torch.rand(t.shape, generator=g) < 0.2, float("-inf"))
        t.requires_grad_(True)
        return mods.bias(t), [t]
    if kind == "module":
        rel = RelativeBias(3, g, dtype)
        return rel.score_mod, [rel.table]
    if kind == "dict":
        held = {"w": torch.randn(Hq, generator=g, dtype=dtype, requires_grad=True)}
        return (lambda s, b, h, q, kv: s * 0.5 + held["w"][h]), [held["w"]]
    if kind == "global":
        global GLOBAL_BIAS
        GLOBAL_BIAS = torch.randn(8, generator=g, dtype=dtype, requires_grad=True)
        return (lambda s, b, h, q, kv: s + GLOBAL_BIAS[(kv % 8)]), [GLOBAL_BIAS]
    if kind == "compose":
        return [mods.alibi(mods.alibi_slopes(Hq)), mods.softcap(5.0)], []
    return None, []


def _run(impl, q, k, v, mask, mod, tensors, dout, with_lse):
    """out, lse (or None) and gradients of q, k, v and ``tensors`` for ``sum(out * dout) + sum(finite lse)``."""
    q, k, v = (t.detach().requires_grad_() for t in (q, k, v))
    res = attention(q, k, v, mask=mask, score_mod=mod, impl=impl, return_lse=with_lse)
    out, lse = res if with_lse else (res, None)
    loss = (out * dout.to(out.dtype)).sum()
    if lse is not None:
        loss = loss + torch.where(torch.isfinite(lse), lse, 0.0).sum()
    grads = torch.autograd.grad(loss, [q, k, v, *tensors], allow_unused=True) if loss.requires_grad else []
    return out.detach(), None if lse is None else lse.detach(), [None if x is None else x.detach() for x in grads]


def _close(name, got, want, tol):
    if got is None or want is None:
        assert got is None and (want is None or not torch.any(want != 0)), f"{name}: gradient missing"
        return
    got, want = got.double(), want.double()
    assert torch.equal(torch.isinf(got), torch.isinf(want)), f"{name}: infinities differ"
    assert not torch.isnan(got).any() and not torch.isnan(want).any(), f"{name}: NaN"
    fin = torch.isfinite(want)
    if fin.any():
        err = float((got[fin] - want[fin]).abs().max())
        scale = float(want[fin].abs().max()) + 1.0
        assert err <= tol * scale, f"{name}: max error {err:.3g} > {tol:.1g} x {scale:.3g}"


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_every_engine_matches_the_fp64_reference(data):
    draw = data.draw
    B, Hkv, G = draw(st.integers(1, 2)), draw(st.integers(1, 2)), draw(st.sampled_from([1, 2, 3]))
    Hq, lq, lk = Hkv * G, draw(st.integers(0, 40)), draw(st.integers(0, 40))
    D, Dv = draw(st.integers(1, 9)), draw(st.sampled_from([None, 3, 8]))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    q = torch.randn(B, Hq, lq, D, generator=g, dtype=dtype)
    k = torch.randn(B, Hkv, lk, D, generator=g, dtype=dtype)
    v = torch.randn(B, Hkv, lk, Dv or D, generator=g, dtype=dtype)
    dout = torch.randn(B, Hq, lq, Dv or D, generator=g, dtype=torch.float64)
    mask = _mask(draw, B, Hq, lq, lk, g)
    mod, tensors = _mod(draw, B, Hq, lq, lk, g, dtype)

    ref_tensors = [t.detach().double().requires_grad_() for t in tensors]
    ref_mod = _rebind(mod, tensors, ref_tensors)
    wants = {}
    tol = 1e-9 if dtype == torch.float64 else 2e-4
    for impl in implementations():
        for with_lse in (True, False):
            try:
                got = _run(impl, q, k, v, mask, mod, tensors, dout, with_lse)
            except ValueError as e:
                assert "cannot run these inputs" in str(e), str(e)
                continue
            if with_lse not in wants:  # the loss has an lse term only when the engine returns one
                wants[with_lse] = _run(
                    "reference", q.double(), k.double(), v.double(), mask, ref_mod, ref_tensors, dout, with_lse
                )
            want = wants[with_lse]
            _close(f"{impl} out", got[0], want[0], tol)
            if with_lse:
                _close(f"{impl} lse", got[1], want[1], tol)
            for n, (a, b) in enumerate(zip(got[2], want[2])):
                _close(f"{impl} grad {['q', 'k', 'v', *['mod'] * 9][n]}", a, b, tol * 10)
            break


def _rebind(mod, tensors, new):
    """The same score mod computing with fp64 copies of its tensors (for the fp64 oracle)."""
    if not tensors:
        return mod
    if isinstance(mod, mods.ScoreMod):  # bias
        return mods.bias(new[0])
    owner = getattr(mod, "__self__", None)
    if isinstance(owner, RelativeBias):
        twin = RelativeBias(owner.span, torch.Generator(), torch.float64)
        twin.table = torch.nn.Parameter(new[0]) if False else twin.table
        twin.table.data = new[0].detach()
        new[0] = twin.table
        return twin.score_mod
    cells = [c.cell_contents for c in mod.__closure__ or ()]
    if cells and isinstance(cells[0], dict):
        held = {"w": new[0]}
        return lambda s, b, h, q, kv: s * 0.5 + held["w"][h]
    return lambda s, b, h, q, kv: s + new[0][(kv % 8)]


@pytest.mark.parametrize("impl", ["tiled", "auto"])
def test_a_module_held_table_gets_the_reference_gradient(impl):
    """The reported case: a relative-position bias module's method as the score mod."""
    g = torch.Generator().manual_seed(0)
    rel = RelativeBias(16, g, torch.float64)
    x = torch.randn(1, 2, 300, 16, generator=g, dtype=torch.float64)
    attention(x, x, x, score_mod=rel.score_mod, impl="reference").sum().backward()
    want, rel.table.grad = rel.table.grad.clone(), None
    attention(x, x, x, score_mod=rel.score_mod, impl=impl).sum().backward()
    torch.testing.assert_close(rel.table.grad, want)


def test_frozen_qkv_and_a_trainable_mod_tensor():
    """q, k, v frozen, only the mod's tensor trainable: a gradient, not an in-place error."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 2, 200, 8, generator=g)
    w = torch.randn(200, 200, generator=g, requires_grad=True)
    for impl in ("reference", "tiled"):
        w.grad = None
        attention(x, x, x, score_mod=mods.bias(w), mask=masks.causal(), impl=impl).sum().backward()
        assert w.grad is not None and torch.isfinite(w.grad).all()


def _spoil(draw, t: Tensor, g: torch.Generator) -> None:
    """Put NaN/+-inf into ``t`` (B, H, L, D) in place: an entry, a whole row, or every row from some position on."""
    B, H, L, D = t.shape
    if t.numel() == 0:
        return
    value = draw(st.sampled_from([float("nan"), float("inf"), float("-inf")]))
    b, h = draw(st.integers(0, B - 1)), draw(st.integers(0, H - 1))
    i, d = draw(st.integers(0, L - 1)), draw(st.integers(0, D - 1))
    kind = draw(st.sampled_from(["entry", "entry", "row", "tail", "random"]))
    if kind == "entry":
        t[b, h, i, d] = value
    elif kind == "row":
        t[b, h, i] = value
    elif kind == "tail":  # padding garbage
        t[b, :, i:] = value
    else:
        t.masked_fill_(torch.rand(t.shape, generator=g) < 0.05, value)


@settings(max_examples=NONFINITE_EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_every_engine_follows_the_nonfinite_rule(data):
    draw = data.draw
    B, Hkv, G = draw(st.integers(1, 2)), draw(st.integers(1, 2)), draw(st.sampled_from([1, 2]))
    Hq, lq, lk = Hkv * G, draw(st.integers(1, 20)), draw(st.integers(1, 20))
    D, Dv = draw(st.integers(1, 6)), draw(st.sampled_from([None, 3]))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    q = torch.randn(B, Hq, lq, D, generator=g, dtype=dtype)
    k = torch.randn(B, Hkv, lk, D, generator=g, dtype=dtype)
    v = torch.randn(B, Hkv, lk, Dv or D, generator=g, dtype=dtype)
    for _ in range(draw(st.integers(1, 3))):
        _spoil(draw, draw(st.sampled_from([q, k, v])), g)
    dout = torch.randn(B, Hq, lq, Dv or D, generator=g, dtype=torch.float64)
    mask = _mask(draw, B, Hq, lq, lk, g)
    mod, tensors = _mod(draw, B, Hq, lq, lk, g, dtype)
    ref_tensors = [t.detach().double().requires_grad_() for t in tensors]
    ref_mod = _rebind(mod, tensors, ref_tensors)
    tol = 1e-9 if dtype == torch.float64 else 2e-4
    with_lse = draw(st.booleans())
    for impl in draw(st.permutations(list(implementations()))):  # the first engine that takes the inputs
        try:
            out, lse, grads = _run(impl, q, k, v, mask, mod, tensors, dout, with_lse)
        except ValueError as e:
            assert "cannot run these inputs" in str(e), str(e)
            continue
        want_out, want_lse, want_grads = expected(
            q, k, v, mask, dout, score_mod=ref_mod, mod_tensors=ref_tensors, with_lse=with_lse
        )
        assert_rule(f"{impl} out", out, want_out, tol)
        if with_lse:
            assert_rule(f"{impl} lse", lse, want_lse, tol)
        for n, (a, b) in enumerate(zip(grads, want_grads)):
            name = f"{impl} grad {['q', 'k', 'v', *['mod'] * 9][n]}"
            if a is None or b is None:
                assert a is None and (b is None or not torch.any(b != 0)), f"{name}: gradient missing"
                continue
            assert torch.isfinite(a).all(), f"{name}: not finite"
            assert_rule(name, a, b, tol * 10)
        return
    raise AssertionError("no engine took the inputs")


FLEX_EXAMPLES = int(os.environ.get("QKV_FUZZ_FLEX_EXAMPLES", "3"))  # each is a FlexAttention compile (seconds)


@pytest.mark.slow
@pytest.mark.skipif("flex" not in implementations(), reason="torch.nn.attention.flex_attention absent")
@settings(max_examples=FLEX_EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_flex_forward_matches_the_fp64_reference(data):
    """The same random compositions for ``impl="flex"`` (forward: it declares no backward on CPU), fewer of them."""
    draw = data.draw
    B, Hkv, G = draw(st.integers(1, 2)), draw(st.integers(1, 2)), draw(st.sampled_from([1, 2]))
    Hq, lq, lk = Hkv * G, draw(st.integers(1, 150)), draw(st.integers(1, 150))
    D, Dv = draw(st.sampled_from([8, 16])), draw(st.sampled_from([None, 16]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    q = torch.randn(B, Hq, lq, D, generator=g, dtype=torch.float64)
    k = torch.randn(B, Hkv, lk, D, generator=g, dtype=torch.float64)
    v = torch.randn(B, Hkv, lk, Dv or D, generator=g, dtype=torch.float64)
    mask = _mask(draw, B, Hq, lq, lk, g)
    mod, _ = _mod(draw, B, Hq, lq, lk, g, torch.float32)
    with torch.no_grad():
        got = attention(q.float(), k.float(), v.float(), mask=mask, score_mod=mod, impl="flex")
        want = attention(q, k, v, mask=mask, score_mod=_rebind_fp64(mod), impl="reference")
    _close("flex out", got, want, 2e-4)


def _rebind_fp64(mod):
    """An fp32 bias mod as its fp64 twin (other mods compute in the score's dtype already)."""
    if isinstance(mod, mods.ScoreMod) and getattr(mod, "tensor", None) is not None:
        return mods.bias(mod.tensor.double())
    return mod
