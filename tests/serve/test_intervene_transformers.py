"""POST /api/intervene on a transformers causal LM run through qkv.hf (a tiny random Mistral with grouped K/V
heads): the metric is the library's logit difference at the query position, the weights are the library's."""

import pytest
import torch

import qkv
from qkv import lens

from .conftest import SENTENCE

transformers = pytest.importorskip("transformers")

from fastapi.testclient import TestClient  # noqa: E402

SIZES = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2)


@pytest.fixture(scope="module")
def lm():
    import qkv.hf

    from ..conftest import CharTokenizer

    torch.manual_seed(0)
    config = transformers.MistralConfig(vocab_size=96, max_position_embeddings=128, **SIZES)
    return qkv.hf.wrap(transformers.MistralForCausalLM(config).eval(), CharTokenizer(), name="tiny-mistral-lm")


@pytest.fixture(scope="module")
def lm_client(lm):
    from qkv.serve.app import create_app

    with TestClient(create_app(lm), base_url="http://127.0.0.1") as c:
        yield c


def test_logit_difference_of_a_causal_lm(lm, lm_client):
    i, a, b = SENTENCE.index(" it") + 1, SENTENCE.index("cat"), SENTENCE.index("mat")  # one token per character
    body = {
        "text": SENTENCE,
        "query": i,
        "prefer": a,
        "over": b,
        "interventions": [
            {"kind": "ablate", "layer": 1, "head": 2},
            {"kind": "swap", "layer": 0, "step": "v", "tokens": [a, b], "head": 1},
        ],
    }
    r = lm_client.post("/api/intervene", json=body)
    assert r.status_code == 200, r.text
    doc = r.json()
    ivs = [lens.ablate(1, 2), lens.swap(0, "v", (a, b), head=1)]
    t = qkv.trace(SENTENCE, lm, interventions=ivs)
    assert doc["weights"] == t.weights[:, :, i].tolist()
    ids = [3 + ord(c) % 90 for c in SENTENCE]
    oracle = lens.effect(SENTENCE, ivs, lens.logit_diff(ids[a], ids[b], position=i), lm)
    m = doc["metric"]
    assert m["name"] == "logit_diff" and [x["name"] for x in doc["metrics"]] == ["logit_diff", "preference"]
    assert m["base"] == pytest.approx(oracle.base, abs=1e-5) and m["value"] == pytest.approx(oracle.value, abs=1e-5)
    assert m["effect"] != 0
    plain = qkv.trace(SENTENCE, lm)  # by hand: logits[i, id(c)] - logits[i, id(m)], plain and intervened
    assert m["base"] == pytest.approx(float(plain.logits[i, ids[a]] - plain.logits[i, ids[b]]), abs=1e-5)
    assert m["value"] == pytest.approx(float(t.logits[i, ids[a]] - t.logits[i, ids[b]]), abs=1e-5)


def test_a_key_value_head_beyond_the_groups_is_refused(lm_client):
    body = {"text": SENTENCE, "interventions": [{"kind": "swap", "layer": 0, "step": "k", "tokens": [1, 2], "head": 3}]}
    r = lm_client.post("/api/intervene", json=body)
    assert r.status_code == 422
    assert r.json()["error"].startswith("interventions[0] (swap): head 3 is out of range for step 'k'; ")
    assert "2 key/value heads (0..1), each shared by 2 query heads" in r.json()["error"]
