"""POST /api/probe in-process (FastAPI's TestClient): qkv.lens.probe on the same items is the oracle; bad items 4xx."""

import json
import threading
import time

import pytest

import qkv.lens
from qkv.lens.probe_io import load_twins, twins_path
from qkv.lens.probing import ABOVE_CHANCE, NO_EVIDENCE, TRACKS

from .conftest import SENTENCE

#: the first 8 lines of the shipped twin pairs (4 pairs), as a client would send them
TWINS = [json.loads(line) for line in twins_path().read_text(encoding="utf-8").splitlines() if line.strip()][:8]
ITEM = TWINS[0]


def post(client, body, **kw):
    r = client.post("/api/probe", json=body, **kw)
    assert r.headers["content-type"].startswith("application/json"), r.text
    return r


def _error(r, status: int, *words: str) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    doc = r.json()
    assert set(doc) == {"error"}, doc
    for w in words:
        assert w in doc["error"], doc["error"]
    return doc["error"]


# ----------------------------------------------------------------------------------------------- happy paths
def test_probe_matches_the_library_on_shipped_twins(client, minilm):
    r = post(client, {"items": TWINS})
    assert r.status_code == 200, r.text
    doc = r.json()
    oracle = qkv.lens.probe(load_twins().items[:8], minilm).to_dict()  # read by the JSONL reader, probed directly
    assert doc["source"] == "request"
    assert {k: v for k, v in doc.items() if k != "source"} == {k: v for k, v in oracle.items() if k != "source"}
    assert doc["schema"] == "qkv.probe" and doc["items"] == {"total": 8, "used": 8, "skipped": []}
    assert len(doc["heads"]) == 72 and doc["layers"] == 6 and doc["heads_per_layer"] == 12
    assert set(doc["baselines"]) == {"first", "nearest", "random"} and doc["heldout"]["n"] == 8
    assert doc["verdict"] in (TRACKS, ABOVE_CHANCE, NO_EVIDENCE) and doc["reason"].startswith("held-out best head")


def test_probe_measure_seed_plain_strings_and_skipped_items(client, minilm):
    items = [
        {"text": SENTENCE, "query": "it", "candidates": ["cat", "mat"], "answer": "cat", "pair": 1},
        {
            "text": "The cat sat on the mat because it was soft.",
            "query": "it",
            "candidates": ["cat", "mat"],
            "answer": "mat",
            "pair": 1,
        },
        {
            "text": "The dog chased the ball because it was bored.",
            "query": "it",
            "candidates": ["dog", "cat"],
            "answer": 0,
        },
        *TWINS[2:4],
    ]
    doc = post(client, {"items": items, "measure": "values", "seed": 3}).json()
    assert doc["items"] == {
        "total": 5,
        "used": 4,
        "skipped": [{"id": "item 2", "line": 2, "reason": "candidate 'cat' does not occur in the text"}],
    }
    data = qkv.lens.probe_io.parse_items(items)
    oracle = qkv.lens.probe(data, minilm, measure="values", seed=3).to_dict()
    assert doc["measure"] == "values" and doc["heldout"]["seed"] == oracle["heldout"]["seed"]
    assert {k: v for k, v in doc.items() if k != "source"} == {k: v for k, v in oracle.items() if k != "source"}


def test_openapi_describes_the_probe(client):
    spec = client.get("/openapi.json").json()
    op = spec["paths"]["/api/probe"]["post"]
    assert {"200", "400", "413", "422", "503"} <= set(op["responses"])
    assert "ProbeRequest" in json.dumps(op["requestBody"]) and "ProbeResponse" in json.dumps(op["responses"]["200"])
    schemas = spec["components"]["schemas"]
    item = schemas["ProbeRequest"]["properties"]["items"]["items"]
    assert item["required"] == ["text", "query", "candidates", "answer"]
    assert set(schemas["ProbeResponse"]["properties"]["verdict"]["enum"]) == {TRACKS, ABOVE_CHANCE, NO_EVIDENCE}
    assert client.get("/api/health").json()["limits"]["max_items"] == 64


# ----------------------------------------------------------------------------------------------- errors
def _with(**fields):
    return {"items": [{**ITEM, **fields}]}


@pytest.mark.parametrize(
    "body, words",
    [
        (
            {"items": [{k: v for k, v in ITEM.items() if k != "query"}]},
            ["items[0]: missing field 'query'", "each item needs text, query, candidates and answer"],
        ),
        (
            _with(query={"text": "it", "start": 99}),
            ["items[0]: field 'query': span 'it' at 99..101 is out of range", "the text has 44 characters"],
        ),
        (
            _with(query={"text": "it", "start": 30}),
            ["items[0]: field 'query': text[30:32] is ' i', not 'it'", "occurs at 31"],
        ),
        (_with(candidates=[{"text": "The cat", "start": 0}]), ["field 'candidates': expected a list of at least 2"]),
        (_with(answer=7), ["field 'answer': expected a candidate index 0..1 or a candidate's text, got 7"]),
        (_with(answer="dog"), ["field 'answer': 'dog' is not one of the candidates"]),
        (_with(query={"text": "it", "start": "31"}), ["'start' must be an integer character offset, got '31'"]),
        (_with(text=5), ["items[0]: field 'text': expected a non-empty string, got 5"]),
        (_with(pair=[1]), ["field 'pair': expected a string or integer pair id"]),
        ({"items": [ITEM, "The cat sat."]}, ["items[1]: expected a JSON object per item, got str"]),
        ({"items": [ITEM] * 65}, ['"items" has 65 items', "at most 64 per request", "qkv probe FILE"]),
        ({"items": []}, ["items: no items"]),
        ({"items": {"text": SENTENCE}}, ['field "items": expected an array, got {"text"']),
        ({"items": [ITEM], "measure": "rollout"}, ["field \"measure\": expected 'weights' or 'values'"]),
        ({"items": [ITEM], "seed": -1}, ['field "seed": expected greater than or equal to 0']),
        ({"items": [ITEM], "seed": "1"}, ['field "seed": expected an integer, got "1" (string)']),
        ({"items": [ITEM], "rounds": 10}, ['unknown field "rounds"']),
        ({}, ['missing field "items"', 'send e.g. {"items": [{"text"']),
        (_with(text=ITEM["text"] + " very" * 100), ['"items[0].text" has 544 characters', "at most 500"]),
        (_with(text=ITEM["text"] + " a" * 60), ['"items[0].text" is 73 tokens long', "at most 64 tokens"]),
        (
            _with(candidates=["The dog", "the mat"]),
            ["no usable items: every item was skipped", "cat-a: candidate 'The dog' does not occur in the text"],
        ),
        (
            _with(candidates=[{"text": "cat", "start": 4}, {"text": "The cat", "start": 0}], answer=0),
            ["no usable items", "share the head word 'cat'"],
        ),
    ],
)
def test_bad_items_are_422_in_the_probes_words(client, body, words):
    _error(post(client, body), 422, *words)


def test_a_full_queue_refuses_the_probe_with_503(minilm):
    from fastapi.testclient import TestClient

    import qkv
    from qkv.serve.app import create_app
    from qkv.serve.limits import Limits

    started, release = threading.Semaphore(0), threading.Event()

    def slow(text, model):  # holds the only slot until released
        started.release()
        release.wait(20)
        return qkv.trace(text, model)

    app = create_app(minilm, limits=Limits(running=1, waiting=0, retry_after=2), tracer=slow)
    with TestClient(app, base_url="http://127.0.0.1") as c:
        results = []
        t = threading.Thread(target=lambda: results.append(c.post("/api/trace", json={"text": SENTENCE})))
        t.start()
        try:
            assert started.acquire(timeout=20)
            deadline = time.monotonic() + 20
            while c.get("/api/health").json()["in_flight"] < 1 and time.monotonic() < deadline:
                time.sleep(0.02)
            r = c.post("/api/probe", json={"items": TWINS[:2]})
            _error(r, 503, "the server is busy: 1 traces are running or waiting; retry in 2 s")
            assert r.headers["retry-after"] == "2"
            _error(c.post("/api/probe", json={"items": []}), 422, "no items")  # checked before queueing
        finally:
            release.set()
            t.join(30)
        assert results[0].status_code == 200
        assert c.post("/api/probe", json={"items": TWINS[:2]}).status_code == 200  # the slot is free again
