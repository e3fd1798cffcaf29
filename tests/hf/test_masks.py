"""The "qkv" mask interface against transformers' own dense masks (the oracle), structure kept."""

import pytest
import torch
from transformers import masking_utils as mu

from qkv.hf.masks import mask_interface

FUNCTIONS = {
    "causal": (mu.causal_mask_function, "causal"),
    "sliding": (mu.sliding_window_causal_mask_function(4), "sliding_window"),
    "bidirectional": (mu.bidirectional_mask_function, None),
    "bidirectional_window": (mu.sliding_window_bidirectional_mask_function(2), "sliding_window"),
}
PADDING = {
    "none": None,
    "right": torch.tensor([[1] * 9, [1] * 6 + [0] * 3]),
    "left": torch.tensor([[1] * 9, [0] * 4 + [1] * 5]),
}
# (q_length, kv_length, q_offset, kv_offset): prefill, decoding with a full cache, a sliding-window cache
SIZES = [(9, 9, 0, 0), (2, 9, 7, 0), (1, 4, 8, 5)]


@pytest.mark.parametrize("fn", list(FUNCTIONS))
@pytest.mark.parametrize("pad", list(PADDING))
@pytest.mark.parametrize("size", SIZES)
def test_structure_equals_transformers_dense_mask(fn, pad, size):
    lq, lk, qo, ko = size
    function, kind = FUNCTIONS[fn]
    kw = dict(
        batch_size=2,
        q_length=lq,
        kv_length=lk,
        q_offset=qo,
        kv_offset=ko,
        mask_function=function,
        attention_mask=PADDING[pad],
    )
    want = mu.sdpa_mask(**kw, allow_is_causal_skip=False)
    got = mask_interface(**kw)
    assert "tensor_mask" not in repr(got), f"structure lost: {got!r}"
    if kind and lq > 1:  # one decoding step sees every key it is given: no structure left but padding
        assert kind in repr(got), repr(got)
    if pad != "none" and not bool(PADDING[pad][:, ko : ko + lk].all()):  # padding among these keys
        assert "padding" in repr(got), repr(got)
    assert torch.equal(got.dense(2, 1, lq, lk).expand(2, 1, lq, lk), want.expand(2, 1, lq, lk)), f"{got!r}"


def test_unknown_mask_functions_fall_back_to_transformers_dense_mask():
    chunked = mu.chunked_causal_mask_function(3, torch.zeros(1, dtype=torch.long))
    kw = dict(batch_size=1, q_length=7, kv_length=7, mask_function=chunked)
    got = mask_interface(**kw)
    assert torch.equal(got.dense(1, 1, 7, 7), mu.sdpa_mask(**kw, allow_is_causal_skip=False))
    assert "sliding" not in repr(got) and "causal" not in repr(got)


def test_a_window_longer_than_the_text_is_plain_causal_for_the_fused_kernel(spy_impls):
    import qkv

    kw = dict(batch_size=1, q_length=200, kv_length=200, mask_function=mu.sliding_window_causal_mask_function(512))
    got = mask_interface(**kw)
    assert "causal" in repr(got) and "sliding" not in repr(got), repr(got)
    q = torch.randn(1, 8, 200, 16)
    qkv.attention(q, q, q, mask=got)
    assert spy_impls == ["sdpa"], spy_impls
