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


# Issue 22: inputs that escaped qkv's own errors.


@pytest.mark.parametrize(
    "scale,got",
    [(torch.tensor([1.0, 2.0]), r"a tensor of shape \(2,\)"), (torch.tensor(0.5, requires_grad=True), "requires grad")],
    ids=["two elements", "requires grad"],
)
def test_a_tensor_scale_must_be_one_plain_number(scale, got):
    q, k, v = qkv3()
    msg = raises(
        r"scale must be one number \(a float or a one-element tensor without gradient\), got ",
        qkv.attention,
        q,
        k,
        v,
        scale=scale,
    )
    assert re.search(got, msg) and "pass one factor, e.g. scale=0.125" in msg and "score_mod" in msg


def test_a_one_element_tensor_scale_is_a_number():
    q, k, v = qkv3()
    torch.testing.assert_close(qkv.attention(q, k, v, scale=torch.tensor([0.25])), qkv.attention(q, k, v, scale=0.25))


def _pair():
    q = torch.randn(1, 2, 3, 4)
    return qkv.attention(q, q, q, return_lse=True)


def _junk(name):
    a = _pair()
    return {"the pair": a, "with None": [a, None], "with float": [a, (a[0], 1.0)], "tensor": a[0]}.get(name, name)


@pytest.mark.parametrize(
    "parts,says",
    [
        (
            None,
            "merge expects a list of (out, lse) pairs, got NoneType; pass a list of attention(..., return_lse=True)",
        ),
        (3, "merge expects a list of (out, lse) pairs, got int; "),
        ("ab", "merge expects a list of (out, lse) pairs, got str; "),
        ({"a": 1}, "merge expects a list of (out, lse) pairs, got dict; "),
        ("tensor", "merge expects a list of (out, lse) pairs, got a tensor of shape (1, 2, 3, 4); "),
        ("the pair", "got one pair (out (1, 2, 3, 4), lse (1, 2, 3)); wrap the pairs in a list: merge([a, b])"),
        ([], "merge needs at least one (out, lse) part, got an empty list; pass a list"),
        ("with None", "part 1: expected a pair (out, lse) of tensors, got NoneType; pass a list"),
        (
            "with float",
            "part 1: expected a pair (out, lse) of tensors, got a tuple of a tensor of shape (1, 2, 3, 4), float",
        ),
    ],
    ids=str,
)
def test_merge_junk_gets_a_value_error(parts, says):
    with pytest.raises(ValueError) as e:
        qkv.merge(_junk(parts) if isinstance(parts, str) else parts)
    assert says in str(e.value)


def test_merge_takes_any_iterable_of_pairs():
    a = _pair()
    out, lse = qkv.merge(iter([a, a]))
    torch.testing.assert_close(out, a[0])
    torch.testing.assert_close(lse, a[1] + torch.log(torch.tensor(2.0)))


def test_a_mask_function_that_depends_on_b_needs_batch_size():
    """It used to be evaluated for b = 0 only and broadcast: silently wrong for the other batch elements."""
    q = torch.randn(2, 3, 4, 8)
    ids = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 1]])
    same_doc = lambda b, h, i, j: ids[b, i] == ids[b, j]  # noqa: E731
    msg = raises(
        r"mask function from_function\('<lambda>'\) depends on b",
        qkv.attention,
        q,
        q,
        q,
        mask=masks.from_function(same_doc),
    )
    assert "needs batch_size, got batch_size=None; pass masks.from_function(fn, batch_size=2)" in msg
    msg = raises("depends on h", qkv.attention, q, q, q, mask=masks.from_function(lambda b, h, i, j: i + h >= j))
    assert "needs num_heads, got num_heads=None; pass masks.from_function(fn, num_heads=3)" in msg
    # with batch_size it is right: equal to the document mask it describes, batch element 1 included
    out = qkv.attention(q, q, q, mask=masks.from_function(same_doc, batch_size=2))
    torch.testing.assert_close(out, qkv.attention(q, q, q, mask=masks.document(ids)))
    qkv.attention(q[:1], q[:1], q[:1], mask=masks.from_function(same_doc))  # batch 1: nothing to get wrong


def test_prefix_lm_errors_name_the_public_call():
    q = torch.randn(2, 1, 4, 8)
    msg = raises(
        r"mask prefix_lm\(\[2\], align='bottom_right'\) is for batch 1 but the attention has batch 2",
        qkv.attention,
        q,
        q,
        q,
        mask=masks.prefix_lm(torch.tensor([2])),
    )
    assert "_Prefix" not in msg
    for bad in (-1, 2.5, "a", True, torch.tensor([[2]])):
        msg = raises(
            r"prefix_lm: prefix_length must be a non-negative int or a \(B,\) integer tensor, got ",
            masks.prefix_lm,
            bad,
        )
        assert msg.endswith("pass e.g. 3 or torch.tensor([3, 5])")
    assert repr(masks.prefix_lm(3, "top_left")) == "prefix_lm(3, align='top_left')"


def test_ring_ranks_that_disagree_on_dtype_are_told_the_dtype_names(monkeypatch):
    """The shard exchange sends dtypes as codes; the error must print names ([torch.float32, torch.bfloat16])."""
    from qkv.distributed import ring

    def all_gather(metas, meta, group=None, async_op=False):
        metas[0].copy_(meta)
        metas[1].copy_(meta)
        metas[1][7] = ring._DTYPES.index(torch.bfloat16)  # rank 1 holds bfloat16
        metas[1][8] = 1  # and the zigzag layout

    monkeypatch.setattr(ring.dist, "all_gather", all_gather)
    monkeypatch.setattr(ring, "wait_all", lambda handles, what, timeout: None)
    q = torch.randn(1, 2, 4, 8)
    msg = raises("ranks disagree on dtype", ring._exchange_meta, q, q, q, "contiguous", None, 0, 2, None)
    assert "[torch.float32, torch.bfloat16] (rank order)" in msg and "[2, 1]" not in msg


def test_a_mask_combined_with_none_says_so():
    # before: AttributeError deep inside the composition; a bool tensor still combines
    raises(r"mask & None: a mask combines with a Mask or a bool tensor", lambda: masks.causal() & None)
    raises(r"mask \| None", lambda: masks.causal() | None)
    m = masks.causal() & torch.ones(1, 1, 3, 3, dtype=torch.bool).tril(-1)
    assert m.dense(1, 1, 3, 3)[0, 0].tolist() == [[False] * 3, [True, False, False], [True, True, False]]
