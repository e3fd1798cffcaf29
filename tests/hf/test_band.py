"""One ``Band``: the transformers backend reads a mask function's band as qkv's own :class:`qkv.masks.Band`."""

import pytest

pytest.importorskip("transformers")

from transformers import masking_utils as mu  # noqa: E402

import qkv.masks  # noqa: E402
from qkv.hf.masks import Band, band_mask, band_of  # noqa: E402


def test_band_is_qkvs_band():
    assert Band is qkv.masks.Band


@pytest.mark.parametrize(
    "fn, band",
    [
        (mu.causal_mask_function, qkv.masks.Band(None, 0)),
        (mu.bidirectional_mask_function, qkv.masks.Band(None, None)),
        (mu.sliding_window_overlay(4), qkv.masks.Band(-3, None)),
        (mu.and_masks(mu.causal_mask_function, mu.sliding_window_overlay(4)), qkv.masks.Band(-3, 0)),
        (mu.and_masks(mu.sliding_window_bidirectional_overlay(2), mu.causal_mask_function), qkv.masks.Band(-2, 0)),
    ],
)
def test_band_of_composes_with_intersect(fn, band):
    got = band_of(fn)
    assert isinstance(got, qkv.masks.Band) and got == band


def test_an_unknown_piece_has_no_band_and_a_band_becomes_a_mask():
    assert band_of(mu.and_masks(mu.causal_mask_function, lambda b, h, q, kv: True)) is None
    dense = band_mask(qkv.masks.Band(-3, 0), 6, 6, 0).dense(1, 1, 6, 6)[0, 0]
    q, kv = [list(range(6))] * 2
    assert dense.tolist() == [[-3 <= k - i <= 0 for k in kv] for i in q]
