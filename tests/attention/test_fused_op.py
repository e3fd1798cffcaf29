"""The private fused CPU kernel sits behind one adapter: hidden or changed, qkv still imports and the tiled
engine computes every segment with plain PyTorch tiles (same results as the reference)."""

import subprocess
import sys

import pytest
import torch

from qkv import attention, masks
from qkv.core.engines.tiled import fused_op, tiled_plan_for
from qkv.core.inputs import check_inputs

from .oracle import rand


@pytest.fixture
def hidden(monkeypatch):
    def missing():
        raise AttributeError(f"'_OpNamespace' 'aten' object has no attribute '{fused_op.OP_NAME}'")

    monkeypatch.setattr(fused_op, "_resolve", missing)
    fused_op.reset()
    yield
    monkeypatch.undo()
    fused_op.reset()


def test_the_op_is_found_and_verified_on_this_torch():
    fused_op.reset()
    assert fused_op.unavailable() is None


def test_hidden_op_gives_a_reason_and_plain_tiles(hidden):
    assert "has no usable" in fused_op.unavailable()
    q, k, v = rand(1, 4, 2, 300, 300, 32, dtype=torch.float32)
    for mask in (None, masks.causal(), masks.sliding_window(40), masks.padding(torch.tensor([200]))):
        q_, k_, v_ = (t.clone().requires_grad_() for t in (q, k, v))
        out = attention(q_, k_, v_, mask=mask, impl="tiled")
        out.sum().backward()
        ref_in = [t.clone().requires_grad_() for t in (q, k, v)]
        ref = attention(*ref_in, mask=mask, impl="reference")
        ref.sum().backward()
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        for a, b in zip((q_, k_, v_), ref_in):
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5)


def test_a_changed_op_is_refused_by_the_probe(monkeypatch):
    def wrong(*args, **kwargs):  # a different signature/semantics: returns the inputs
        return args[0], args[0][..., 0]

    monkeypatch.setattr(fused_op, "_resolve", lambda: (wrong, wrong))
    fused_op.reset()
    try:
        assert fused_op.unavailable() is not None
        q = torch.zeros(1, 2, 600, 16)
        plan = tiled_plan_for(check_inputs(q, q, q, mask=masks.sliding_window(40)))
        assert plan.groups  # still planned (for plain tiles)
    finally:
        monkeypatch.undo()
        fused_op.reset()


def test_import_qkv_and_correct_results_without_the_op_in_a_fresh_process():
    code = f"""
import torch
real = torch.ops.aten
class Hidden:
    def __getattr__(self, name):
        if name.startswith({fused_op.OP_NAME!r}):
            raise AttributeError(name)
        return getattr(real, name)
torch.ops.aten = Hidden()
import qkv
from qkv.core.engines.tiled import fused_op
assert fused_op.unavailable() is not None
q, k, v = (torch.randn(1, 2, 500, 16, dtype=torch.float64) for _ in range(3))
for m in (qkv.masks.causal(), qkv.masks.sliding_window(33)):
    a = qkv.attention(q, k, v, mask=m, impl="tiled")
    b = qkv.attention(q, k, v, mask=m, impl="reference")
    assert torch.allclose(a, b, atol=1e-12), float((a - b).abs().max())
print("ok")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]
