"""The JSON API in-process (FastAPI's TestClient): every endpoint against qkv.trace as the oracle, every error 4xx."""

import json

import pytest
import torch

import qkv
from qkv.lens.heads import choose_head
from qkv.lens.summary import attention_summary, compare_summary, head_caveat, head_flips, preference_summary
from qkv.serve.schemas import CompareResponse, Health, ProbeResponse, TraceResponse
from qkv.view.html import token_labels

from .conftest import SENTENCE, XSS

SOFT = "The cat sat on the mat because it was soft."


@pytest.fixture(scope="module")
def oracle(minilm):
    return qkv.trace(SENTENCE, minilm)


def post(client, path, body, **kw):
    r = client.post(path, json=body, **kw) if not isinstance(body, bytes) else client.post(path, content=body, **kw)
    assert r.headers["content-type"].startswith("application/json"), r.text
    return r


# ----------------------------------------------------------------------------------------------- happy paths
def test_health(client):
    r = client.get("/api/health")
    assert r.status_code == 200
    doc = r.json()
    assert doc["status"] == "ok" and doc["in_flight"] == 0
    assert doc["model"]["num_layers"] == 6 and doc["model"]["num_heads"] == 12 and doc["model"]["head_dim"] == 32
    assert doc["limits"]["max_body"] == 64 * 1024 and doc["limits"]["running"] >= 1


def test_trace_matches_the_library(client, oracle):
    r = post(client, "/api/trace", {"text": SENTENCE, "query": "it", "layer": 5, "head": 11})
    assert r.status_code == 200
    doc = r.json()
    assert doc["query"] == {"index": 8, "token": "it"} and (doc["layer"], doc["head"]) == (5, 11)
    assert [t["text"] for t in doc["tokens"]] == oracle.tokens
    assert [(t["start"], t["end"]) for t in doc["tokens"]] == [tuple(o) for o in oracle.offsets]
    assert [t["special"] for t in doc["tokens"]] == oracle.special
    # the query's row in every head, the value-norm shares and the rollout: the library's numbers
    assert torch.tensor(doc["weights"]) == pytest.approx(oracle.weights[:, :, 8], abs=1e-6)
    assert torch.tensor(doc["values"]) == pytest.approx(oracle.values[:, :, 8], abs=1e-6)
    assert torch.tensor(doc["rollout"]) == pytest.approx(oracle.rollout[:, 8], abs=1e-6)
    rows = doc["breakdown"]["rows"]
    expect = oracle.breakdown(8, 5, 11)
    assert [(r["index"], r["token"]) for r in rows] == [(b.index, b.token) for b in expect]
    assert [list(r.values())[2:] for r in rows] == [pytest.approx(list(b)[2:], abs=1e-6) for b in expect]
    # the essay's sentence with the query on its pronoun: the essay's pair by default, as in qkv explain
    assert (doc["prefer"], doc["over"]) == ("cat", "mat")
    assert doc["summary"] == preference_summary(oracle, 8, "cat", "mat", "weights")
    assert doc["caveat"] == head_caveat(oracle, 8, "cat", 5, 11)
    assert doc["trace"] is None and doc["masked"] is None


def test_trace_without_a_pair_off_the_essay(client, minilm):
    text = "The dog chased the ball because it was fast."
    doc = post(client, "/api/trace", {"text": text, "query": "ball"}).json()
    t = qkv.trace(text, minilm)
    assert doc["prefer"] is None and doc["summary"] == attention_summary(t, "ball", "weights")
    assert doc["caveat"] is None and (doc["layer"], doc["head"]) == choose_head(t, "ball")


def test_trace_defaults_and_full_trace(client, oracle):
    doc = post(client, "/api/trace", {"text": SENTENCE, "include_trace": True}).json()
    assert doc["query"] == {"index": 8, "token": "it"}  # the text's first pronoun, as the CLI
    n, h = doc["layer"], doc["head"]
    assert (n, h) == choose_head(oracle, 8, prefer="cat", over="mat")  # the lens's rule, as the CLI and the page
    assert doc["trace"] == oracle.to_dict(4)
    assert doc["masked"] == [[] for _ in oracle.tokens]  # an encoder masks nothing
    assert doc["labels"] == token_labels(oracle)


@pytest.mark.parametrize("query, index", [("it", 8), ("IT", 8), ("the@2", 5), (8, 8), (-2, 11), ("8", 8)])
def test_query_by_token_occurrence_or_index(client, query, index):
    assert post(client, "/api/trace", {"text": SENTENCE, "query": query}).json()["query"]["index"] == index


def test_measures_and_prefer_over(client, oracle):
    doc = post(
        client, "/api/trace", {"text": SENTENCE, "query": "it", "prefer": "cat", "over": "mat", "measure": "values"}
    ).json()
    best = oracle.heads(8, "cat", "mat", "values")[0]
    assert (doc["layer"], doc["head"]) == (best.layer, best.head) and (doc["prefer"], doc["over"]) == ("cat", "mat")
    assert doc["summary"] == preference_summary(oracle, 8, "cat", "mat", "values")
    doc = post(client, "/api/trace", {"text": SENTENCE, "query": "it", "measure": "rollout"}).json()
    assert doc["measure"] == "rollout" and doc["summary"] == preference_summary(oracle, 8, "cat", "mat", "rollout")
    doc = post(client, "/api/trace", {"text": SENTENCE, "query": "cat", "measure": "rollout"}).json()
    assert doc["prefer"] is None and "after rollout" in doc["summary"]


@pytest.mark.parametrize("query", [None, "it", "It", "IT", "it@1", 8, "8", -5])
def test_one_story_for_one_token(client, oracle, query):
    """However the pronoun is named, the page opens on the same head and pair (the CLI's: tests/test_cli.py)."""
    body = {"text": SENTENCE} if query is None else {"text": SENTENCE, "query": query}
    doc = post(client, "/api/trace", body).json()
    best = oracle.heads(8, "cat", "mat")[0]
    assert doc["query"] == {"index": 8, "token": "it"}
    assert (doc["prefer"], doc["over"]) == ("cat", "mat") and (doc["layer"], doc["head"]) == (best.layer, best.head)


def test_compare_matches_the_library(client, oracle, minilm):
    r = post(
        client, "/api/compare", {"text_a": SENTENCE, "text_b": SOFT, "query": "it", "prefer": "cat", "over": "mat"}
    )
    assert r.status_code == 200
    doc = r.json()
    soft = qkv.trace(SOFT, minilm)
    a = {(p.layer, p.head): p.diff for p in oracle.heads("it", "cat", "mat")}
    b = {(p.layer, p.head): p.diff for p in soft.heads("it", "cat", "mat")}
    assert len(doc["heads"]) == 72
    for hd in doc["heads"]:
        assert hd["diff_a"] == pytest.approx(a[hd["layer"], hd["head"]], abs=1e-6)
        assert hd["diff_b"] == pytest.approx(b[hd["layer"], hd["head"]], abs=1e-6)
        assert hd["flipped"] == ((hd["diff_a"] > 0) != (hd["diff_b"] > 0))
    flips = [hd["flipped"] for hd in doc["heads"]]
    assert flips == sorted(flips, reverse=True)  # flipped heads first
    n = sum(flips)
    assert f"the other {72 - n} keep their preference." in doc["summary"]
    ranked = (oracle.heads("it", "cat", "mat"), soft.heads("it", "cat", "mat"))
    assert doc["summary"] == compare_summary(head_flips(*ranked), "cat", "mat")
    clear = [hd for hd in doc["heads"] if hd["clear"]]
    assert all(hd["flipped"] and min(abs(hd["diff_a"]), abs(hd["diff_b"])) >= 0.05 for hd in clear)
    assert f"{len(clear)} of the {n} switch by at least 0.05 on both sides" in doc["summary"]
    assert doc["texts"] == [SENTENCE, SOFT] and (doc["prefer"], doc["over"], doc["query"]) == ("cat", "mat", "it")


def test_openapi_describes_every_endpoint(client):
    spec = client.get("/openapi.json").json()
    assert {"/api/trace", "/api/compare", "/api/health"} <= set(spec["paths"])
    trace_op = spec["paths"]["/api/trace"]["post"]
    assert {"200", "400", "413", "422", "503"} <= set(trace_op["responses"])
    assert "TraceRequest" in json.dumps(trace_op["requestBody"])
    assert client.get("/docs").status_code == 404  # Swagger UI would load from a CDN


def test_page_and_static_files(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert "connect-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "http://" not in r.text.replace('href="/openapi.json"', "") and "https://" not in r.text
    for name in ("view.js", "view.css", "app.js", "app.css"):
        assert client.get(f"/static/{name}").status_code == 200
    assert "window.qkvView" in client.get("/static/view.js").text


# ----------------------------------------------------------------------------------------------- errors
def _error(r, status: int, *words: str) -> str:
    assert r.status_code == status, (r.status_code, r.text)
    doc = r.json()
    assert set(doc) == {"error"}, doc
    for w in words:
        assert w in doc["error"], doc["error"]
    return doc["error"]


@pytest.mark.parametrize(
    "body, status, words",
    [
        ({"text": ""}, 422, ['"text" is empty', "give a sentence"]),
        ({"text": "   \n"}, 422, ['"text" is empty']),
        (
            {"text": SENTENCE, "query": "mats"},
            422,
            ["token 'mats' is not in the text", "close matches: mat", '"query" field'],
        ),
        ({"text": SENTENCE, "query": "dog"}, 422, ["token 'dog' is not in the text", "tokens are: the cat sat"]),
        ({"text": SENTENCE, "query": "it@3"}, 422, ["only 1 occurrence(s)", "it@1"]),
        ({"text": SENTENCE, "query": 99}, 422, ["token index 99 is out of range", "13 tokens"]),
        ({"text": SENTENCE, "layer": 6}, 422, ["layer 6 is out of range", "6 layers (0..5)"]),
        ({"text": SENTENCE, "head": -13}, 422, ["head -13 is out of range", "12 heads"]),
        ({"text": SENTENCE, "prefer": "cat"}, 422, ['give both "prefer" and "over"']),
        ({"text": SENTENCE, "prefer": "cat", "over": "cat"}, 422, ["same token"]),
        ({"text": SENTENCE, "prefer": "dog", "over": "cat"}, 422, ["prefer: token 'dog' is not in the text"]),
        ({"text": 5}, 422, ['field "text": expected a string, got 5 (int)', 'send e.g. {"text"']),
        ({"text": ["a"]}, 422, ['field "text": expected a string, got ["a"] (array)']),
        ({"text": SENTENCE, "query": True}, 422, ['field "query": expected a string or an integer, got true (bool)']),
        ({"text": SENTENCE, "layer": "2"}, 422, ['field "layer": expected an integer, got "2" (string)']),
        ({"text": SENTENCE, "include_trace": "yes"}, 422, ['field "include_trace": expected true or false']),
        ({"text": SENTENCE, "measure": "attention"}, 422, ['field "measure": expected', "'rollout'"]),
        ({"text": SENTENCE, "qeury": "it"}, 422, ['unknown field "qeury"']),
        ({}, 422, ['missing field "text"']),
        ([SENTENCE], 422, ["the body: expected a JSON object, got"]),
        ("just a string", 422, ["expected a JSON object"]),
        ({"text": "x" * 501}, 422, ["501 characters", "at most 500"]),
        ({"text": "cat " * 100}, 422, ["102 tokens long", "at most 64 tokens"]),
    ],
)
def test_trace_errors_are_4xx_json_with_a_clear_message(client, body, status, words):
    _error(post(client, "/api/trace", body), status, *words)


def test_malformed_json_is_400(client):
    for raw in (b'{"text": ', b"{'text': 'single quotes'}", b"\xff\xfe", b'{"text": "a"} trailing'):
        _error(
            post(client, "/api/trace", raw, headers={"content-type": "application/json"}),
            400,
            "malformed JSON",
            "Content-Type: application/json",
        )


def test_not_json_is_422(client):
    _error(
        post(client, "/api/trace", b"", headers={"content-type": "application/json"}),
        422,
        "the request body is empty",
        'e.g. {"text"',
    )
    _error(
        post(client, "/api/trace", b"text=hello", headers={"content-type": "application/x-www-form-urlencoded"}),
        422,
        "Content-Type: application/x-www-form-urlencoded",
        "send JSON",
    )


def test_oversized_body_is_413_declared_or_streamed(client):
    big = json.dumps({"text": "cat " * 20000}).encode()
    _error(
        post(client, "/api/trace", big, headers={"content-type": "application/json"}),
        413,
        f"{len(big):,} bytes",
        "at most 65,536 bytes",
    )

    def chunks():  # no Content-Length: the limit still holds
        for _ in range(100):
            yield b"x" * 1000

    r = client.post("/api/trace", content=chunks(), headers={"content-type": "application/json"})
    _error(r, 413, "more than 65,536 bytes")


def test_compare_errors(client):
    ok = {"text_a": SENTENCE, "text_b": SOFT, "prefer": "cat", "over": "mat"}
    _error(post(client, "/api/compare", {**ok, "text_b": ""}), 422, '"text_b" is empty')
    _error(
        post(client, "/api/compare", {**ok, "query": "it", "text_b": "The dog sat."}),
        422,
        "text B: token 'it' is not in the text",
    )
    _error(post(client, "/api/compare", {**ok, "text_b": "The dog sat."}), 422, "text B: prefer: token 'cat'")
    _error(post(client, "/api/compare", {**ok, "over": "cat"}), 422, "same token")
    _error(post(client, "/api/compare", {**ok, "measure": "rollout"}), 422, 'field "measure"')
    _error(post(client, "/api/compare", {"text_a": SENTENCE}), 422, 'missing field "text_b"', 'missing field "prefer"')


def test_routes_methods_hosts_and_paths(client):
    _error(client.get("/api/nothing"), 404, "no such page or endpoint: GET /api/nothing", "POST /api/trace")
    _error(client.get("/api/trace"), 405, "GET is not allowed on /api/trace", "POST")
    _error(client.get("/static/../app.py"), 404)
    for path in ("/static/%2e%2e%2fapp.py", "/static/..%2f..%2fpyproject.toml", "/static/app.py", "/static/"):
        _error(client.get(path), 404)  # names come from a fixed table: nothing else is ever opened
    _error(client.get("/static/limits.py"), 404, "no static file 'limits.py'", "app.js")
    _error(client.get("/api/health", headers={"host": "evil.example:8000"}), 400, "Host 'evil.example:8000'")
    assert client.get("/api/health", headers={"host": "localhost:8000"}).status_code == 200


def test_hostile_text_round_trips_as_data(client):
    doc = post(client, "/api/trace", {"text": XSS, "query": "it", "include_trace": True}).json()
    assert doc["text"] == XSS and doc["trace"]["text"] == XSS
    r = client.get("/")
    assert "__pwned" not in r.text  # the page never contains user text; the script writes it with textContent


# ----------------------------------------------------------------------------------------------- declared schemas
@pytest.mark.parametrize(
    "path, body, model",
    [
        ("/api/trace", {"text": SENTENCE}, TraceResponse),
        ("/api/trace", {"text": SENTENCE, "query": "cat", "measure": "values", "include_trace": True}, TraceResponse),
        ("/api/compare", {"text_a": SENTENCE, "text_b": SOFT, "prefer": "cat", "over": "mat"}, CompareResponse),
        ("/api/health", None, Health),
    ],
)
def test_responses_are_what_their_schema_declares(client, path, body, model):
    """Every field the route returns is declared (extra fields are refused) and every declared one is there."""
    r = client.get(path) if body is None else post(client, path, body)
    assert r.status_code == 200, r.text
    doc = r.json()
    model.model_validate(doc)
    assert set(doc) == {f.alias or name for name, f in model.model_fields.items()}
    spec = client.get("/openapi.json").json()
    method = "get" if body is None else "post"
    declared = spec["paths"][path][method]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert declared.endswith("/" + model.__name__)


def test_probe_response_is_what_its_schema_declares(client):
    items = [
        {"text": SENTENCE, "query": "it", "candidates": ["cat", "mat"], "answer": "cat", "pair": 1},
        {"text": SOFT, "query": "it", "candidates": ["cat", "mat"], "answer": "mat", "pair": 1},
    ]
    r = post(client, "/api/probe", {"items": items})
    assert r.status_code == 200, r.text
    ProbeResponse.model_validate(r.json())


def test_a_response_that_breaks_its_schema_is_an_error_not_sent(minilm, monkeypatch):
    """The app checks what it returns: a payload with an undeclared field is a 500 naming the bug."""
    from fastapi.testclient import TestClient

    import qkv.serve.app as app_module

    real = app_module.trace_payload
    monkeypatch.setattr(app_module, "trace_payload", lambda t, **kw: {**real(t, **kw), "surprise": 1})
    with TestClient(app_module.create_app(minilm), base_url="http://127.0.0.1", raise_server_exceptions=False) as c:
        r = post(c, "/api/trace", {"text": SENTENCE})
    assert r.status_code == 500 and "surprise" in r.json()["error"] and "bug in qkv serve" in r.json()["error"]
