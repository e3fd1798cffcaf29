"""Masks: definitions, composition, drawing, and the block map the tiled engine relies on."""

import pytest
import torch

from qkv import masks
from qkv.masks import EMPTY, FULL, PARTIAL


def all_masks(B=2, lq=37, lk=53):
    docs_q = torch.stack([torch.arange(lq) * 3 // lq, torch.arange(lq) * 2 // lq])
    docs_k = torch.stack([torch.arange(lk) * 3 // lk, torch.arange(lk) * 2 // lk])
    return {
        "full": masks.full(),
        "causal": masks.causal(),
        "causal_tl": masks.causal(align="top_left"),
        "window": masks.sliding_window(5),
        "window_sym_tl": masks.sliding_window(4, 3, align="top_left"),
        "padding": masks.padding(torch.tensor([lk, 20]), q_lengths=torch.tensor([30, lq])),
        "document": masks.document(docs_q, docs_k),
        "document_unsorted": masks.document(docs_q.flip(-1), docs_k),
        "prefix": masks.prefix_lm(torch.tensor([7, 0])),
        "function": masks.from_function(lambda b, h, q, k: (q * k) % 5 != 1, num_heads=1),
        "tensor": torch.rand(B, 1, lq, lk) > 0.5,
        "and": masks.causal() & masks.padding(torch.tensor([lk, 11])),
        "or_not": masks.sliding_window(3, align="top_left") | ~masks.causal(),
    }


@pytest.mark.parametrize("name", list(all_masks()))
@pytest.mark.parametrize("bq,bk", [(8, 16), (16, 7), (64, 64)])
def test_block_map_is_exact_or_conservative(name, bq, bk):
    B, lq, lk = 2, 37, 53
    m = masks.as_mask(all_masks(B, lq, lk)[name])
    dense = m.dense(B, 1, lq, lk).expand(B, 1, lq, lk)
    bm = m.block_map(lq, lk, bq, bk)
    nq, nk = -(-lq // bq), -(-lk // bk)
    assert bm.shape[-2:] == (nq, nk) and bm.dtype == torch.int8
    bm = bm.expand(B, 1, nq, nk)
    exact = 0
    for b in range(B):
        for i in range(nq):
            for j in range(nk):
                blk = dense[b, 0, i * bq : (i + 1) * bq, j * bk : (j + 1) * bk]
                kind = int(bm[b, 0, i, j])
                if kind == EMPTY:
                    assert not blk.any(), (b, i, j)
                elif kind == FULL:
                    assert blk.all(), (b, i, j)
                exact += kind == (FULL if blk.all() else EMPTY if not blk.any() else PARTIAL)
    if name not in ("document_unsorted", "or_not"):  # closed forms are exact for these masks
        assert exact == B * nq * nk


def test_composition_semantics():
    lq, lk = 6, 9
    a, b = masks.causal(), masks.sliding_window(2)
    da, db = a.dense(1, 1, lq, lk), b.dense(1, 1, lq, lk)
    assert torch.equal((a & b).dense(1, 1, lq, lk), da & db)
    assert torch.equal((a | ~b).dense(1, 1, lq, lk), da | ~db)
    t = torch.rand(1, 1, lq, lk) > 0.5
    assert torch.equal((a & t).dense(1, 1, lq, lk), da & t)


def test_draw_shows_alignment():
    assert masks.causal(align="top_left").draw(2, 3) == "   k 0 1 2\nq0   ■ · ·\nq1   ■ ■ ·"
    assert masks.causal().draw(2, 3) == "   k 0 1 2\nq0   ■ ■ ·\nq1   ■ ■ ■"
    assert masks.padding(torch.tensor([1, 2])).draw(1, 3, b=1) == "   k 0 1 2\nq0   ■ ■ ·"


def test_offset_restricts_a_global_mask_to_a_block():
    m = masks.causal() & masks.document(torch.tensor([0, 0, 0, 1, 1, 1, 1]))
    full = m.dense(1, 1, 7, 7)
    sub = masks.offset(m, 3, 2, 7, 7)
    assert torch.equal(sub.dense(1, 1, 4, 3), full[:, :, 3:, 2:5])
