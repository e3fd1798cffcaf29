"""qkv.attention inside torch.compile: no graph breaks, forward and backward, every built-in mask and mod.

Oracle: the eager reference in float64 on the same inputs (outputs, lse and gradients of q, k, v and of a
captured bias tensor). Most compiles use the ``aot_eager`` backend (TorchDynamo + AOTAutograd + the ops' fake
implementations, without Inductor's code generation, which costs tens of seconds per graph on this CPU); one
test runs Inductor end to end.
"""

from __future__ import annotations

import pytest
import torch
import torch._dynamo as dynamo
import torch._functorch.config
import torch._inductor.config
from torch._dynamo.testing import CompileCounter

import qkv
from qkv import masks, mods
from qkv.core.engines.tiled import ops
from qkv.core.engines.tiled.spec import describe, rebuild
from qkv.core.inputs import check_inputs
from qkv.core.registry import get

from .oracle import max_err, rand

B, HQ, HKV, LQ, LK, D = 2, 4, 2, 37, 53, 16


def _tensors():
    g = torch.Generator().manual_seed(1)
    q_ids = torch.tensor([[0] * 20 + [1] * 17, [0] * 5 + [1] * 30 + [2] * 2])  # (B, LQ)
    kv_ids = torch.tensor([[0] * 30 + [1] * 23, [0] * 9 + [1] * 40 + [2] * 4])  # (B, LK)
    return {
        "lengths": torch.tensor([0, 41]),  # batch element 0 has no keys: empty rows
        "q_lengths": torch.tensor([30, 37]),
        "q_ids": q_ids,
        "kv_ids": kv_ids,
        "prefix": torch.tensor([5, 12]),
        "bool": torch.rand(B, 1, LQ, LK, generator=g) > 0.3,
        "bias": torch.randn(1, HQ, LQ, LK, dtype=torch.float64, generator=g).requires_grad_(True),
    }


def _slopes():
    return mods.alibi_slopes(HQ)


#: TorchDynamo cannot trace the ``~`` operator of a Python object (torch 2.13), so a complement is built outside
NOT_CAUSAL = ~masks.causal()

#: name -> fn(tensors) -> keyword arguments of qkv.attention (masks and mods are built inside the compiled code)
CASES = {
    "causal_bottom_right": lambda t: dict(mask=masks.causal("bottom_right")),
    "causal_top_left": lambda t: dict(mask=masks.causal("top_left")),
    "sliding_window": lambda t: dict(mask=masks.sliding_window(8)),
    "symmetric_window": lambda t: dict(mask=masks.sliding_window(4, 4, align="top_left")),
    "global_window": lambda t: dict(mask=masks.global_window(2, 6)),
    "padding": lambda t: dict(mask=masks.padding(t["lengths"])),
    "padding_queries": lambda t: dict(mask=masks.padding(t["lengths"], t["q_lengths"])),
    "document": lambda t: dict(mask=masks.document(t["q_ids"], t["kv_ids"])),
    "prefix_lm": lambda t: dict(mask=masks.prefix_lm(t["prefix"])),
    "document_and_causal": lambda t: dict(mask=masks.document(t["q_ids"], t["kv_ids"]) & masks.causal()),
    "window_or_not_causal_and_padding": lambda t: dict(
        mask=(masks.sliding_window(3) | NOT_CAUSAL) & masks.padding(t["lengths"])
    ),
    "bool_tensor": lambda t: dict(mask=t["bool"]),
    "function_mask": lambda t: dict(mask=masks.from_function(lambda b, h, q, kv: (q + kv) % 3 != 0)),
    "causal_alibi": lambda t: dict(mask=masks.causal(), score_mod=mods.alibi(_slopes())),
    "window_softcap": lambda t: dict(mask=masks.sliding_window(8), score_mod=mods.softcap(2.0)),
    "causal_bias_grad": lambda t: dict(mask=masks.causal(), score_mod=mods.bias(t["bias"])),
    "document_compose": lambda t: dict(
        mask=masks.document(t["q_ids"], t["kv_ids"]),
        score_mod=mods.compose(mods.alibi(_slopes()), mods.softcap(3.0), mods.bias(t["bias"])),
    ),
}


def _loss_grads(out, lse, q, k, v, bias):
    g = torch.Generator().manual_seed(2)
    dout = torch.randn(out.shape, dtype=out.dtype, generator=g)
    dlse = torch.randn(lse.shape, dtype=lse.dtype, generator=g)
    loss = (out * dout).sum() + (torch.where(torch.isfinite(lse), lse, 0.0) * dlse).sum()
    return torch.autograd.grad(loss, [q, k, v, bias], allow_unused=True)


def _run(fn, case, dtype=torch.float64):
    q, k, v = (x.requires_grad_(True) for x in rand(B, HQ, HKV, LQ, LK, D, dtype=dtype))
    t = _tensors()
    out, lse = fn(q, k, v, t)
    return out.detach(), lse.detach(), _loss_grads(out, lse, q, k, v, t["bias"])


def _compiled(case: str, impl: str, backend="aot_eager"):
    build = CASES[case]

    def fn(q, k, v, t):
        return qkv.attention(q, k, v, impl=impl, return_lse=True, **build(t))

    return torch.compile(fn, fullgraph=True, backend=backend)


def _eager_reference(case: str):
    build = CASES[case]
    return lambda q, k, v, t: qkv.attention(q, k, v, impl="reference", return_lse=True, **build(t))


def _assert_same(got, want, tol):
    names = ["out", "lse", "dq", "dk", "dv", "dbias"]
    for name, a, b in zip(names, [got[0], got[1], *got[2]], [want[0], want[1], *want[2]]):
        assert (a is None) == (b is None), f"{name}: gradient present in one run only"
        if a is not None:
            assert max_err(a, b) <= tol, f"{name}: compiled differs from the eager reference by {max_err(a, b):.3g}"


@pytest.mark.parametrize("case", list(CASES))
def test_fullgraph_tiled_forward_and_backward_equal_the_eager_reference(case):
    dynamo.reset()
    got = _run(_compiled(case, "tiled"), case)
    want = _run(_eager_reference(case), case)
    _assert_same(got, want, 1e-10)
    if "bias" in case:
        assert got[2][3] is not None and got[2][3].abs().sum() > 0  # the captured tensor got its gradient


@pytest.mark.parametrize("case", ["causal_top_left", "padding", "causal_alibi", "document_compose"])
def test_fullgraph_auto_equals_the_eager_reference(case):
    dynamo.reset()
    _assert_same(_run(_compiled(case, "auto"), case), _run(_eager_reference(case), case), 1e-10)


@pytest.mark.slow  # 20-50 s: Inductor generates and builds C++ for both graphs
def test_inductor_compiles_the_tiled_ops_forward_and_backward():
    """Inductor generates code around the ops from their fake implementations (shapes and strides; it asserts
    the real strides). Its on-disk caches are off: a graph cached before a fake implementation changed would
    hide the change."""
    dynamo.reset()
    case = "causal_alibi"
    with torch._inductor.config.patch(fx_graph_cache=False), torch._functorch.config.patch(enable_autograd_cache=False):
        got = _run(_compiled(case, "tiled", backend="inductor"), case, dtype=torch.float32)
    want = _run(_eager_reference(case), case, dtype=torch.float32)
    _assert_same(got, want, 2e-5)


ROWS = {
    "no mask": {},
    "causal": {"mask": masks.causal()},
    "sliding_window(64)": {"mask": masks.sliding_window(64)},
    "causal + alibi": {"mask": masks.causal(), "score_mod": mods.alibi(mods.alibi_slopes(4))},
}


@pytest.mark.parametrize("impl", ["auto", "tiled"])
@pytest.mark.parametrize("row", list(ROWS))
def test_explain_counts_no_graph_break(row, impl):
    """The issue's table: B=1, H=4, L=512, D=64, fp32, CPU."""
    dynamo.reset()
    q, k, v = rand(1, 4, 4, 512, 512, 64, dtype=torch.float32)
    kw = ROWS[row]
    explained = dynamo.explain(lambda q, k, v: qkv.attention(q, k, v, impl=impl, **kw))(q, k, v)
    assert explained.graph_break_count == 0, [r.reason for r in explained.break_reasons]
    assert explained.graph_count == 1


def test_a_new_length_recompiles_once_then_never():
    """Automatic dynamic shapes: the first length compiles static, the second recompiles with a symbolic
    length, every later length reuses that graph (the plan is made inside the op, per call)."""
    dynamo.reset()
    counter = CompileCounter()
    fn = torch.compile(
        lambda q, k, v: qkv.attention(q, k, v, mask=masks.sliding_window(8), impl="tiled"),
        backend=counter,
        fullgraph=True,
    )
    for L in (32, 40, 48, 56, 64, 72):
        q, k, v = rand(1, 2, 2, L, L, 16, dtype=torch.float64)
        want = qkv.attention(q, k, v, mask=masks.sliding_window(8), impl="reference")
        assert max_err(fn(q, k, v), want) < 1e-12
    assert counter.frame_count <= 2, f"{counter.frame_count} compiles for 6 lengths"


def test_padding_lengths_are_values_not_guards():
    """New padding lengths change no guard: one graph, and the op plans from the values of each call."""
    dynamo.reset()
    counter = CompileCounter()
    fn = torch.compile(
        lambda q, k, v, n: qkv.attention(q, k, v, mask=masks.padding(n), impl="tiled"),
        backend=counter,
        fullgraph=True,
    )
    q, k, v = rand(2, 2, 2, 64, 64, 16, dtype=torch.float64)
    for lengths in ([64, 3], [0, 17], [40, 64]):
        n = torch.tensor(lengths)
        want = qkv.attention(q, k, v, mask=masks.padding(n), impl="reference")
        assert max_err(fn(q, k, v, n), want) < 1e-12
    assert counter.frame_count == 1


def test_a_python_score_mod_goes_to_the_reference_which_traces_it_with_its_gradient():
    """A score mod given as a function cannot enter the tiled op: tiled declines under compilation with a
    reason, auto takes the reference, which traces the function -- gradients reach its captured tensor."""
    dynamo.reset()
    w = torch.randn(HQ, dtype=torch.float64, requires_grad=True)

    def mod(s, b, h, q, kv):
        return s + w[h] * (q - kv).abs()

    def fn(q, k, v):
        return qkv.attention(q, k, v, mask=masks.causal(), score_mod=mod)

    q, k, v = rand(B, HQ, HKV, LQ, LK, D)
    got = torch.compile(fn, fullgraph=True, backend="aot_eager")(q, k, v)
    (gw,) = torch.autograd.grad(got.sum(), [w])
    want = qkv.attention(q, k, v, mask=masks.causal(), score_mod=mod, impl="reference")
    (ww,) = torch.autograd.grad(want.sum(), [w])
    assert max_err(got.detach(), want.detach()) < 1e-10 and max_err(gw, ww) < 1e-10
    inp = check_inputs(q, k, v, score_mod=mod)
    assert get("tiled").not_supported_reasons(inp) == []  # eager: tiled takes it
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.compiler, "is_compiling", lambda: True)
        (reason,) = ops.compile_reason(inp)
    assert "Python function" in reason and "impl='reference'" in reason


def test_the_op_passes_torch_library_opcheck():
    """Schema, fake implementation, autograd registration and dispatch agree (torch.library.opcheck)."""
    q, k, v = (x.requires_grad_(True) for x in rand(2, 2, 1, 9, 11, 8))
    spec, tensors = describe(masks.padding(torch.tensor([4, 11])) & masks.causal(), mods.alibi(mods.alibi_slopes(2)))
    torch.library.opcheck(ops.tiled_attention, (q, k, v, tensors, spec, 0.3, [], True))


def test_describe_and_rebuild_round_trip_and_refuse_functions():
    ids = torch.tensor([0, 0, 1, 1, 1])
    mask = masks.document(ids) & masks.sliding_window(2)
    mod = mods.compose(mods.alibi(mods.alibi_slopes(2)), mods.softcap(4.0))
    spec, tensors = describe(mask, mod)
    assert len(tensors) == 2 and torch.equal(tensors[0], ids[None])  # ids held twice (queries, keys) pass once
    m2, mod2 = rebuild(spec, tensors)
    assert torch.equal(m2.dense(1, 2, 5, 5), mask.dense(1, 2, 5, 5))
    s = torch.randn(1, 2, 5, 5)
    idx = [torch.arange(n).view(*(1,) * i, n, *(1,) * (3 - i)) for i, n in enumerate((1, 2, 5, 5))]
    assert torch.equal(mod2.apply(s, *idx, 5, 5), mod.apply(s, *idx, 5, 5))
    assert describe(masks.from_function(lambda b, h, q, kv: q >= kv), None) is None
    assert describe(None, lambda s, b, h, q, kv: s) is None
