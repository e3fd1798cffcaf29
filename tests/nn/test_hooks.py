"""Hook points that read and write (qkv.nn.hooks): each replacement flows on exactly as the same edit made by
hand in the math, nothing stays installed, and without hooks the fast path is bitwise unchanged."""

import pytest
import torch

import qkv
from qkv.nn import Hooks, MultiHeadAttention, Recorder, hooks, recording
from qkv.nn.hooks import active

NAME = "layers.0.attention"


def _mha(hkv=2):
    torch.manual_seed(0)
    return MultiHeadAttention(32, 4, num_kv_heads=hkv, name=NAME).eval()


def _manual(mha, x, *, edit_step=None, edit=None, mask=None):
    """The forward pass written out step by step, with ``edit`` applied at ``edit_step`` (the oracle)."""
    B, L, _ = x.shape
    q, k, v = mha._project_qkv(x)  # (B, Hq, L, D), (B, Hkv, L, D) x 2
    t = {"q": q, "k": k, "v": v}
    for s in ("q", "k", "v"):
        if edit_step == s:
            t[s] = edit(t[s])
    g = mha.num_heads // mha.num_kv_heads
    kk, vv = t["k"].repeat_interleave(g, 1), t["v"].repeat_interleave(g, 1)
    scores = t["q"] @ kk.transpose(-2, -1)  # (B, Hq, L, L)
    scores = edit(scores) if edit_step == "scores" else scores
    scaled = scores / mha.head_dim**0.5
    scaled = edit(scaled) if edit_step == "scaled" else scaled
    if mask is not None:
        scaled = scaled.masked_fill(~mask.dense(B, mha.num_heads, L, L), float("-inf"))
    w = torch.softmax(scaled, -1)
    w = edit(w) if edit_step == "weights" else w
    out = w @ vv  # (B, Hq, L, D)
    out = edit(out) if edit_step == "output" else out
    return mha.out_proj(out.transpose(1, 2).reshape(B, L, -1))


def _zero_head(h):
    def edit(t):
        t = t.clone()
        t[:, h] = 0
        return t

    return edit


@pytest.mark.parametrize("step", ["q", "k", "v", "scores", "scaled", "weights", "output"])
def test_a_replacement_at_each_step_equals_the_same_edit_by_hand(step):
    mha, x = _mha(), torch.randn(2, 6, 32)
    edit = _zero_head(1)
    with hooks(Hooks().add(f"{NAME}.{step}", lambda t, name: edit(t))):
        got = mha(x, mask=qkv.masks.causal())
    want = _manual(mha, x, edit_step=step, edit=edit, mask=qkv.masks.causal())
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(got, mha(x, mask=qkv.masks.causal()), atol=1e-4)  # the edit changed something


def test_zeroing_a_head_output_equals_zeroing_its_columns_of_the_output_projection_input():
    mha, x = _mha(), torch.randn(1, 5, 32)
    cols = slice(2 * mha.head_dim, 3 * mha.head_dim)
    handle = mha.out_proj.register_forward_pre_hook(lambda m, a: (a[0].index_fill(-1, torch.arange(16, 24), 0.0),))
    try:
        want = mha(x)
    finally:
        handle.remove()
    assert cols == slice(16, 24)
    with hooks(Hooks().add(f"{NAME}.output", lambda t, n: _zero_head(2)(t))):
        got = mha(x)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)


def test_observing_hooks_and_unrelated_hooks_leave_the_output_bitwise_unchanged():
    mha, x = _mha(), torch.randn(2, 7, 32)
    plain = mha(x)
    seen = []
    with hooks(Hooks().add("layers.9.attention.output", lambda t, n: torch.zeros_like(t))):
        assert torch.equal(mha(x), plain)  # another layer's hook: the fast path runs untouched
    with hooks(Hooks().add(f"{NAME}.output", lambda t, n: seen.append(n))):
        assert torch.equal(mha(x), plain)  # q/k/v/output hooks keep the fast engines
    assert seen == [f"{NAME}.output"]


def test_hooks_apply_in_order_and_the_recorder_inside_sees_the_edited_tensor():
    mha, x = _mha(), torch.randn(1, 4, 32)
    calls = []
    first = Hooks().add(f"{NAME}.weights", lambda t, n: calls.append("a") or t * 0 + 0.25)
    second = Hooks().add(f"{NAME}.weights", lambda t, n: calls.append(("b", float(t[0, 0, 0, 0]))))
    rec = Recorder([f"{NAME}.weights"])
    with torch.no_grad(), hooks(first, second), recording(rec):
        mha(x)
    assert calls == ["a", ("b", 0.25)]
    assert torch.all(rec[f"{NAME}.weights"] == 0.25)


def test_nothing_stays_installed_after_an_exception_and_bad_replacements_are_refused():
    mha, x = _mha(), torch.randn(1, 4, 32)
    with pytest.raises(RuntimeError, match="boom"):
        with hooks(Hooks().add(f"{NAME}.q", lambda t, n: (_ for _ in ()).throw(RuntimeError("boom")))):
            mha(x)
    assert active() == ()
    with pytest.raises(ValueError, match=r"returned shape \(1, 4\).*keep the shape"):
        with hooks(Hooks().add(f"{NAME}.v", lambda t, n: torch.zeros(1, 4))):
            mha(x)
    with pytest.raises(ValueError, match="return a Tensor"):
        with hooks(Hooks().add(f"{NAME}.k", lambda t, n: 3.0)):
            mha(x)
    with pytest.raises(ValueError, match="a hook is a callable"):
        Hooks().add(f"{NAME}.k", "not callable")
    assert active() == ()
