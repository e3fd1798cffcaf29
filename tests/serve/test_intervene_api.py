"""POST /api/intervene against oracles: the library's interventions and effects (qkv.trace(text, interventions=),
lens.effect), fp64 cosines recomputed from the traces, and the issue's exact properties (knocked-out edges weigh
exactly 0 and rows sum to 1, swapping K swaps two scores, swapping V leaves the weights)."""

import json

import pytest
import torch

import qkv
from qkv import lens
from qkv.serve.intervene_schemas import InterveneResponse

from .conftest import SENTENCE

SOFT = "The cat sat on the mat because it was soft."
PAIR = {"query": "it", "prefer": "cat", "over": "mat"}


def post(client, interventions, **fields):
    r = client.post("/api/intervene", json={"text": SENTENCE, "interventions": interventions, **fields})
    assert r.status_code == 200, r.text
    doc = r.json()
    InterveneResponse.model_validate(doc)  # exactly what the schema declares
    return doc


def cos_pref(t, i, a, b):
    f = t.final.double()
    c = torch.nn.functional.cosine_similarity
    return float(c(f[i], f[a], dim=0) - c(f[i], f[b], dim=0))


def test_no_intervention_is_the_plain_trace(client, minilm):
    t = qkv.trace(SENTENCE, minilm)
    i, a, b = t.index("it"), t.index("cat"), t.index("mat")
    doc = post(client, [], **PAIR)
    assert doc["weights"] == doc["base_weights"] == t.weights[:, :, i].tolist()
    assert doc["weight_change"] == [[0.0] * 12] * 6
    m = doc["metric"]
    assert m["name"] == "preference" and m["method"] == "none"
    assert m["value"] == m["base"] and m["effect"] == 0.0
    assert m["base"] == pytest.approx(cos_pref(t, i, a, b), abs=1e-6)
    assert [x["name"] for x in doc["metrics"]] == ["preference", "embedding_cosine"]
    assert doc["metrics"][1]["base"] == pytest.approx(1.0, abs=1e-6)
    assert doc["interventions"] == [] and doc["summary"].startswith("No intervention: preference = ")


def test_zero_ablation_matches_the_library(client, minilm):
    ivs = [lens.ablate(3, 1)]
    t0, t = qkv.trace(SENTENCE, minilm), qkv.trace(SENTENCE, minilm, interventions=ivs)
    i, a, b = t.index("it"), t.index("cat"), t.index("mat")
    doc = post(client, [{"kind": "ablate", "layer": 3, "head": 1}], **PAIR, include_trace=True)
    assert doc["weights"] == t.weights[:, :, i].tolist() and doc["base_weights"] == t0.weights[:, :, i].tolist()
    assert doc["weights"][:4] == doc["base_weights"][:4]  # an output ablated in layer 3 changes layers 4 and 5 only
    assert doc["weights"][4] != doc["base_weights"][4]
    want = 0.5 * (t.weights[:, :, i].double() - t0.weights[:, :, i].double()).abs().sum(-1)
    torch.testing.assert_close(torch.tensor(doc["weight_change"], dtype=torch.float64), want, rtol=0, atol=1e-12)
    oracle = lens.effect(SENTENCE, ivs, lens.preference("it", "cat", "mat"), minilm)
    m = doc["metric"]
    assert (m["name"], m["method"]) == ("preference", "zero-ablate L3 H1")
    assert m["base"] == pytest.approx(oracle.base, abs=1e-5) and m["value"] == pytest.approx(oracle.value, abs=1e-5)
    assert m["value"] == pytest.approx(cos_pref(t, i, a, b), abs=1e-6) and m["effect"] == m["value"] - m["base"]
    emb = lens.effect(SENTENCE, ivs, lens.embedding_cosine(), minilm)
    assert doc["metrics"][1]["value"] == pytest.approx(emb.value, abs=1e-5) and emb.value < 1
    assert doc["trace"] == json.loads(json.dumps(t.to_dict(4)))  # the page draws the intervened run
    assert (doc["layer"], doc["head"]) == (3, 1)  # the head shown: the first one intervened on
    assert doc["interventions"] == [
        {
            "kind": "ablate",
            "layer": 3,
            "head": 1,
            "how": "zero",
            "source": None,
            "references": None,
            "token_indices": [],
            "label": "zero-ablate L3 H1",
        }
    ]
    assert "from +" in doc["summary"] and f"effect {m['effect']:+.4f}" in doc["summary"]


def test_knocked_out_edge_weighs_zero_and_the_row_still_sums_to_one(client):
    doc = post(client, [{"kind": "knockout", "layer": 2, "head": 3, "keys": ["cat", "[CLS]"]}], query="it")
    i = doc["query"]["index"]
    row, base = doc["weights"][2][3], doc["base_weights"][2][3]
    assert row[2] == 0.0 and row[0] == 0.0 and sum(row) == pytest.approx(1.0, abs=1e-6)
    rest = 1 - base[0] - base[2]
    assert [row[j] for j in range(len(row)) if j not in (0, 2)] == pytest.approx(
        [base[j] / rest for j in range(len(base)) if j not in (0, 2)], abs=1e-6
    )  # renormalised over the keys left
    assert [doc["weights"][2][h] for h in range(12) if h != 3] == [
        doc["base_weights"][2][h] for h in range(12) if h != 3
    ]
    assert doc["interventions"][0]["query"] == i and doc["interventions"][0]["keys"] == [2, 0]
    assert doc["interventions"][0]["label"] == "knock out 'it' → 'cat', '[CLS]' in L2 H3"


def test_swap_k_swaps_the_two_scores_and_swap_v_keeps_the_weights(client, minilm):
    t = qkv.trace(SENTENCE, minilm)
    i, a, b = t.index("it"), t.index("cat"), t.index("mat")
    k = post(client, [{"kind": "swap", "layer": 2, "step": "k", "tokens": ["cat", "mat"]}], **PAIR, include_trace=True)
    scores, base = torch.tensor(k["trace"]["layers"][2]["scores"]), t.scores[2]  # (H, L, L)
    perm = list(range(len(t)))
    perm[a], perm[b] = b, a
    torch.testing.assert_close(scores[:, i], base[:, i, perm].round(decimals=4), rtol=0, atol=2e-4)
    w, w0 = torch.tensor(k["weights"][2]), torch.tensor(k["base_weights"][2])  # (H, L)
    torch.testing.assert_close(w, w0[:, perm], rtol=0, atol=1e-6)
    assert k["weights"][:2] == k["base_weights"][:2]
    v = post(client, [{"kind": "swap", "layer": 2, "step": "v", "tokens": ["cat", 6], "head": None}], **PAIR)
    assert v["weights"][:3] == v["base_weights"][:3] and v["weights"][3] != v["base_weights"][3]
    oracle = lens.effect(SENTENCE, [lens.swap(2, "v", ("cat", "mat"))], lens.preference("it", "cat", "mat"), minilm)
    assert v["metric"]["value"] == pytest.approx(oracle.value, abs=1e-5)
    assert v["interventions"][0]["tokens"] == [a, b]


def test_patch_and_resample_from_another_text(client, minilm):
    src = qkv.trace(SOFT, minilm)
    ivs = [lens.patch(src, 2, 3), lens.ablate(4, None, how="resample", source=src)]
    t = qkv.trace(SENTENCE, minilm, interventions=ivs)
    doc = post(
        client,
        [
            {"kind": "patch", "source": SOFT, "layer": 2, "head": 3},
            {"kind": "ablate", "layer": 4, "head": None, "how": "resample", "source": SOFT},
        ],
        **PAIR,
    )
    i = t.index("it")
    assert doc["weights"] == t.weights[:, :, i].tolist()
    oracle = lens.effect(SENTENCE, ivs, lens.preference("it", "cat", "mat"), minilm)
    assert doc["metric"]["value"] == pytest.approx(oracle.value, abs=1e-5)
    assert [x["label"] for x in doc["interventions"]] == [
        "patch output of L2 H3 from 'The cat sat on the mat because it was s…'",
        "resample-ablate L4 (every head) from 'The cat sat on the mat because it was s…'",
    ]


def test_every_layer_and_every_head(client, minilm):
    ivs = [lens.ablate(None, 2), lens.swap(None, "v", ("cat", "mat"))]
    t = qkv.trace(SENTENCE, minilm, interventions=ivs)
    doc = post(
        client,
        [
            {"kind": "ablate", "layer": None, "head": 2},
            {"kind": "swap", "layer": None, "step": "v", "tokens": ["cat", "mat"]},
        ],
        query="it",
    )
    assert doc["weights"] == t.weights[:, :, t.index("it")].tolist() and doc["weights"] != doc["base_weights"]
    assert [x["label"] for x in doc["interventions"]] == [
        "zero-ablate every layer, head 2",
        "swap v of 'cat' and 'mat' in every layer",
    ]


def test_mean_ablation_with_references(client, minilm):
    refs = [SOFT, "The dog chased the ball because it was fast."]
    t = qkv.trace(SENTENCE, minilm, interventions=[lens.ablate(1, 7, how="mean", over=refs)])
    doc = post(client, [{"kind": "ablate", "layer": 1, "head": 7, "how": "mean", "references": refs}], query="it")
    assert doc["weights"] == t.weights[:, :, t.index("it")].tolist()
    assert doc["metric"]["name"] == "embedding_cosine" and doc["metric"]["method"] == "mean-ablate L1 H7"


def _bad(client, body, status, *fragments):
    r = (
        client.post("/api/intervene", json=body)
        if not isinstance(body, str)
        else client.post("/api/intervene", content=body, headers={"Content-Type": "application/json"})
    )
    assert r.status_code == status, r.text
    assert set(r.json()) == {"error"}
    for f in fragments:
        assert f in r.json()["error"], (f, r.json()["error"])


@pytest.mark.parametrize(
    "interventions, fragments",
    [
        ([{"kind": "ablate", "layer": 6, "head": 1}], ["interventions[0] (ablate): layer 6 is out of range", "(0..5)"]),
        ([{"kind": "ablate", "layer": 1, "head": 12}], ["interventions[0] (ablate): head 12 is out of range"]),
        (
            [
                {"kind": "ablate", "layer": 1, "head": 1},
                {"kind": "swap", "layer": 1, "step": "k", "tokens": ["cat", "dog"]},
            ],
            ["interventions[1] (swap) tokens[1]: token 'dog' is not in the text"],
        ),
        ([{"kind": "swap", "layer": 1, "step": "k", "tokens": ["cat", 2]}], ["both token 2", "swap two different"]),
        ([{"kind": "knockout", "layer": 1, "head": 0, "keys": [99]}], ["keys[0]: token index 99 is out of range"]),
        (
            [{"kind": "patch", "layer": 1, "head": 0, "source": "The cat sat."}],
            ["interventions[0] (patch): the source text is 6 tokens long but the text is 13", "same token count"],
        ),
        ([{"kind": "ablate", "layer": 1, "head": 0, "how": "resample"}], ['how "resample"', 'no "source" text']),
        (
            [{"kind": "ablate", "layer": 1, "head": 0, "source": "The dog sat."}],
            ['interventions[0] (ablate): "source" is used only with how "resample", but how is "zero"'],
        ),
        (
            [{"kind": "ablate", "layer": 1, "head": 0, "how": "resample", "source": SOFT, "references": [SOFT]}],
            ['"references" is used only with how "mean", but how is "resample"'],
        ),
        (
            [{"kind": "ablate", "layer": 1, "head": 0, "how": "mean", "references": []}],
            ['field "interventions[0].references": expected at least 1 item'],
        ),
        (
            [{"kind": "swap", "layer": 1, "step": "o", "tokens": ["cat", "mat"]}],
            ["interventions[0].step", "'q', 'k' or 'v'"],
        ),
        ([{"kind": "cut", "layer": 1}], ["interventions[0]", "'kind' is one of 'ablate', 'knockout', 'swap', 'patch'"]),
        (
            [{"kind": "ablate", "layer": "1", "head": 0}],
            ['field "interventions[0].layer": expected an integer, got "1"'],
        ),
        ([{"kind": "ablate", "layer": 1}], ['missing field "interventions[0].head"']),
        ([{"kind": "ablate", "layer": 1, "head": 0, "heads": 2}], ['unknown field "interventions[0].heads"']),
        ([{"kind": "patch", "layer": 1, "head": 0, "source": " "}], ['"interventions[0].source" is empty']),
        ([{"kind": "ablate", "layer": 1, "head": 0}] * 129, ['field "interventions": expected at most 128 items']),
    ],
)
def test_bad_interventions_are_422_naming_which(client, interventions, fragments):
    _bad(client, {"text": SENTENCE, "interventions": interventions}, 422, *fragments)


def test_bad_requests(client):
    _bad(client, {"text": SENTENCE}, 422, 'missing field "interventions"', '"kind": "ablate"')
    _bad(client, {"text": " ", "interventions": []}, 422, '"text" is empty')
    _bad(client, {"text": SENTENCE, "interventions": [], "query": "dog"}, 422, "query: token 'dog' is not in the text")
    _bad(client, {"text": SENTENCE, "interventions": [], "prefer": "cat"}, 422, 'give both "prefer" and "over"')
    _bad(client, {"text": SENTENCE, "interventions": [], "prefer": "cat", "over": 2}, 422, "name the same token")
    _bad(client, {"text": SENTENCE, "interventions": [], "layer": 9, "head": 0}, 422, "layer 9 is out of range")
    _bad(client, '{"text": "x", "interventions": [', 400, "malformed JSON")
    _bad(client, {"text": "word " * 80, "interventions": []}, 422, "at most 64 tokens")


def test_openapi_describes_intervene(client):
    spec = client.get("/openapi.json").json()
    op = spec["paths"]["/api/intervene"]["post"]
    assert {"200", "400", "413", "422", "503"} <= set(op["responses"])
    assert "InterveneRequest" in json.dumps(op["requestBody"])
    items = spec["components"]["schemas"]["InterveneRequest"]["properties"]["interventions"]["items"]
    assert set(items["discriminator"]["mapping"]) == {"ablate", "knockout", "swap", "patch"}
    assert "InterveneResponse" in json.dumps(op["responses"]["200"])


def test_the_plain_run_of_a_text_is_traced_once(minilm):
    from fastapi.testclient import TestClient

    from qkv.lens.trace import trace as lens_trace
    from qkv.serve.app import create_app
    from qkv.serve.intervene import PlainRuns

    calls = []

    def counting(text, model):
        calls.append(text)
        return lens_trace(text, model)

    with TestClient(create_app(minilm, tracer=counting), base_url="http://127.0.0.1") as c:
        first = c.post(
            "/api/intervene", json={"text": SENTENCE, "interventions": [{"kind": "ablate", "layer": 3, "head": 1}]}
        )
        again = c.post(
            "/api/intervene", json={"text": SENTENCE, "interventions": [{"kind": "ablate", "layer": 3, "head": 1}]}
        )
        patched = c.post(
            "/api/intervene",
            json={"text": SENTENCE, "interventions": [{"kind": "patch", "layer": 3, "head": 1, "source": SOFT}]},
        )
    assert first.status_code == again.status_code == patched.status_code == 200
    assert first.json() == again.json() and calls == [SENTENCE, SOFT]
    runs = PlainRuns(minilm, counting, size=2)
    calls.clear()
    a, b = runs(SENTENCE), runs(SOFT)
    assert runs(SENTENCE) is a and runs("The dog sat.") is not b and runs(SOFT) is not b  # least recent goes first
    assert calls == [SENTENCE, SOFT, "The dog sat.", SOFT]


def test_swapping_k_equals_swapping_v_on_the_output_of_an_unmasked_model(client):
    """Attention is equivariant to permuting keys: sum_j w(pi K)_j v_j = sum_j w(K)_j v_pi(j). Without a mask that
    tells the two tokens apart (MiniLM), swapping their K and swapping their V change the weights differently
    (who is found vs what is carried) and the layer's output -- hence every metric -- identically."""
    k, v = (
        post(client, [{"kind": "swap", "layer": 2, "step": step, "tokens": ["cat", "mat"], "head": 4}], **PAIR)
        for step in "kv"
    )
    assert k["weights"][2] != k["base_weights"][2] and v["weights"][2] == v["base_weights"][2]
    assert k["metric"]["effect"] != 0
    for a, b in zip(k["metrics"], v["metrics"]):
        assert a["value"] == pytest.approx(b["value"], abs=1e-6), (a, b)
    torch.testing.assert_close(torch.tensor(k["weights"][3:]), torch.tensor(v["weights"][3:]), rtol=0, atol=1e-5)
