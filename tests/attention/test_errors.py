"""Bad input gets a ValueError that says what was expected, what arrived and how to fix it."""

import re

import pytest
import torch

import qkv
from qkv import masks, mods


def qkv3(B=1, H=2, L=4, D=8):
    return torch.randn(B, H, L, D), torch.randn(B, H, L, D), torch.randn(B, H, L, D)


def raises(match, fn, *a, **kw):
    with pytest.raises(ValueError, match=match) as e:
        fn(*a, **kw)
    return str(e.value)


def test_wrong_rank():
    q, k, v = qkv3()
    msg = raises(r"q must have 4 dims \(B, H, L, D\)", qkv.attention, q[0], k, v)
    assert "(2, 4, 8)" in msg and "unsqueeze" in msg


def test_batch_mismatch():
    q, k, v = qkv3()
    raises(r"share the batch size.*q 1, k 2, v 1", qkv.attention, q, torch.randn(2, 2, 4, 8), v)


def test_head_dim_mismatch_names_both():
    q, k, v = qkv3()
    msg = raises(r"k has head_dim 59 but q has 8", qkv.attention, q, torch.randn(1, 2, 4, 59), v)
    assert "must share head_dim" in msg


def test_kv_length_mismatch():
    q, k, v = qkv3()
    raises(r"k has length 4 but v has 5", qkv.attention, q, k, torch.randn(1, 2, 5, 8))


def test_heads_not_divisible():
    q = torch.randn(1, 6, 4, 8)
    k = v = torch.randn(1, 4, 4, 8)
    raises(r"multiple of key/value heads.*6 % 4", qkv.attention, q, k, v)


def test_dtype_and_device_mismatch():
    q, k, v = qkv3()
    raises(r"share one dtype.*q torch.float32, k torch.float64", qkv.attention, q, k.double(), v)
    raises(r"floating-point", qkv.attention, q.long(), k, v)
    meta = torch.empty(1, 2, 4, 8, device="meta")
    raises(r"one device.*meta", qkv.attention, q, meta, v)


def test_mask_not_broadcastable_prints_both_shapes():
    q, k, v = qkv3()
    msg = raises(r"not broadcastable", qkv.attention, q, k, v, mask=torch.ones(3, 1, 4, 4, dtype=torch.bool))
    assert "(3, 1, 4, 4)" in msg and "(1, 2, 4, 4)" in msg
    msg = raises(r"not broadcastable", qkv.attention, q, k, v, score_mod=mods.bias(torch.zeros(1, 1, 4, 5)))
    assert "(1, 1, 4, 5)" in msg and "(1, 2, 4, 4)" in msg
    raises(r"bool tensor", qkv.attention, q, k, v, mask=torch.ones(4, 4))
    raises(r"ids for Lq=3", qkv.attention, q, k, v, mask=masks.document(torch.tensor([0, 0, 1])))


def test_negative_window():
    raises(r"left must be a non-negative int.*-1", masks.sliding_window, -1)
    raises(r"right must be a non-negative int", masks.sliding_window, 2, -3)
    raises(r"align must be one of", masks.causal, "bottom")


@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_scale(scale):
    q, k, v = qkv3()
    raises(r"scale must be a positive finite number", qkv.attention, q, k, v, scale=scale)


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_bad_dropout(p):
    q, k, v = qkv3()
    raises(r"dropout_p must be a probability in \[0, 1\)", qkv.attention, q, k, v, dropout_p=p)


def test_unknown_impl_lists_known():
    q, k, v = qkv3()
    msg = raises(r"unknown impl 'flash3'", qkv.attention, q, k, v, impl="flash3")
    for name in ["auto", *qkv.implementations()]:
        assert re.search(rf"\b{name}\b", msg)


def test_bad_mask_and_mod_types():
    q, k, v = qkv3()
    raises(r"mask must be a qkv.masks.Mask", qkv.attention, q, k, v, mask="causal")
    raises(r"score_mod must be a callable", qkv.attention, q, k, v, score_mod=3)
    raises(
        r"one slope per query head|per-head parameters",
        qkv.attention,
        q,
        k,
        v,
        score_mod=mods.alibi(mods.alibi_slopes(3)),
    )
    raises(
        r"mask function must return a bool tensor",
        qkv.attention,
        q,
        k,
        v,
        mask=masks.from_function(lambda b, h, i, j: i - j),
    )


def test_a_mask_combined_with_none_says_so():
    # before: AttributeError deep inside the composition; a bool tensor still combines
    raises(r"mask & None: a mask combines with a Mask or a bool tensor", lambda: masks.causal() & None)
    raises(r"mask \| None", lambda: masks.causal() | None)
    m = masks.causal() & torch.ones(1, 1, 3, 3, dtype=torch.bool).tril(-1)
    assert m.dense(1, 1, 3, 3)[0, 0].tolist() == [[False] * 3, [True, False, False], [True, True, False]]
