"""Ranks given different masks, score mods or scales get one clear ValueError on every rank -- not a
timeout that blames a dead peer (issue 11)."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # spawned children import agreement_jobs by name
import agreement_jobs  # noqa: E402

import qkv  # noqa: E402
from qkv.distributed import launch  # noqa: E402
from qkv.distributed.agreement import describe  # noqa: E402


@pytest.fixture(scope="module")
def results():
    return launch.spawn(agreement_jobs.disagreements, 2, timeout=180, pg_timeout=60)


@pytest.mark.parametrize(
    "name, says",
    [
        ("mask", "disagree on the mask (rank 0: causal(align='bottom_right'); rank 1: sliding_window(4, 0"),
        ("alignment", "(rank 0: causal(align='bottom_right'); rank 1: causal(align='top_left'))"),
        ("document ids", "equal descriptions, different contents"),
        ("mask or none", "(rank 0: causal(align='bottom_right'); rank 1: None)"),
        ("score mod", "disagree on the score_mod (rank 0: alibi(2 slopes, align='bottom_right')"),
        ("softcap", "(rank 0: softcap(30.0); rank 1: softcap(50.0))"),
        ("scale", "disagree on the scale (rank 0: 0.5; rank 1: 0.35355339059327373)"),
    ],
)
def test_ranks_that_disagree_get_the_same_clear_error(results, name, says):
    msg0, msg1 = results[0][name], results[1][name]
    assert msg0 == msg1, "every rank raises the same message"
    assert msg0.startswith("ring_attention: the ranks disagree on the ") and says in msg0, msg0
    assert "every rank must pass the same" in msg0 and "dead" not in msg0 and "timed out" not in msg0


def test_ranks_that_agree_still_compute_exactly(results):
    for r in results:
        assert r["agree"].startswith("ok ") and float(r["agree"][3:]) < 1e-12, r["agree"]


def test_descriptions_are_deterministic_and_see_contents():
    m, mods = qkv.masks, qkv.mods
    assert describe(m.causal()) == describe(m.causal()) != describe(m.causal("top_left"))
    a, b = m.document(torch.tensor([0, 0, 1])), m.document(torch.tensor([0, 1, 1]))
    assert describe(a) != describe(b) and describe(a) == describe(m.document(torch.tensor([0, 0, 1])))
    assert describe(mods.alibi(torch.tensor([0.5, 0.25]))) != describe(mods.alibi(torch.tensor([0.5, 0.125])))
    assert describe(m.causal() & m.sliding_window(2)) != describe(m.causal() | m.sliding_window(2))
    assert describe(torch.ones(2, dtype=torch.bool)) != describe(torch.ones(2, dtype=torch.uint8))
    assert describe(describe).startswith("qkv.distributed.agreement.describe")
    assert describe(0.1 + 0.2) == "0.30000000000000004"  # floats exactly, not rounded
