"""Llama in qkv == transformers.LlamaForCausalLM on small random checkpoints created at test time:
GQA and MQA, tied and untied heads, attention bias, RoPE default / linear / llama3 scaling."""

import json
from pathlib import Path

import pytest
import torch

import qkv.models
from qkv.nn import Recorder, recording

from .conftest import save_hf

transformers = pytest.importorskip("transformers")

VOCAB = 89
VARIANTS = {
    # name: (num_kv_heads, tie_word_embeddings, attention_bias, rope_parameters)
    "gqa-untied": (2, False, False, {"rope_type": "default", "rope_theta": 500.0}),
    "mqa-tied-bias-llama3": (
        1,
        True,
        True,
        {
            "rope_type": "llama3",
            "rope_theta": 10000.0,
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 16,
        },
    ),
    "mha-linear": (4, False, False, {"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0}),
}


def make(tmp_path_factory, name):
    kv, tie, bias, rope = VARIANTS[name]
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        hidden_size=64,
        num_attention_heads=4,
        num_key_value_heads=kv,
        num_hidden_layers=2,
        intermediate_size=96,
        vocab_size=VOCAB,
        tie_word_embeddings=tie,
        attention_bias=bias,
        max_position_embeddings=64,
        initializer_range=0.2,
        rope_parameters=rope,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
        attn_implementation="eager",
    )
    hf = transformers.LlamaForCausalLM(cfg).eval()
    path = save_hf(hf, tmp_path_factory.mktemp(name))
    return qkv.models.load(path), hf, path


@pytest.fixture(scope="module", params=list(VARIANTS))
def pair(request, tmp_path_factory):
    return make(tmp_path_factory, request.param)


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, VOCAB, (2, 13), generator=torch.Generator().manual_seed(2))


def test_logits_match(pair, ids):
    ours, hf, _ = pair
    with torch.no_grad():
        a, b = ours(ids).logits, hf(ids).logits
    assert b.abs().max() > 1.0, "the checkpoint must give non-trivial logits"
    assert (a - b).abs().max().item() < 1e-4


def test_structure(pair):
    ours, hf, _ = pair
    cfg = hf.config
    att = ours.layers[1].attention
    assert (att.num_heads, att.num_kv_heads, att.head_dim) == (4, cfg.num_key_value_heads, 16)
    assert att.k_proj.out_features == cfg.num_key_value_heads * 16
    assert (att.q_proj.bias is not None) == cfg.attention_bias
    assert (ours.lm_head.weight is ours.token_embedding.weight) == cfg.tie_word_embeddings
    assert ours.config.num_kv_heads == cfg.num_key_value_heads


def test_attention_weights_match(pair, ids):
    ours, hf, _ = pair
    with torch.no_grad(), recording(Recorder(["layers.*.attention.weights", "layers.*.attention.k"])) as rec:
        ours(ids)
    with torch.no_grad():
        b = hf(ids, output_attentions=True).attentions
    for i in range(2):
        assert (rec[f"layers.{i}.attention.weights"] - b[i]).abs().max().item() < 1e-5
        assert rec[f"layers.{i}.attention.k"].shape == (2, hf.config.num_key_value_heads, 13, 16)


def test_greedy_generate_equals_transformers(pair, ids):
    ours, hf, _ = pair
    got = ours.generate(ids, 10)
    want = hf.generate(ids, max_new_tokens=10, do_sample=False)
    assert got.shape == (2, 23)
    assert torch.equal(got, want)


def test_left_padded_generate_equals_transformers(pair, ids):
    ours, hf, _ = pair
    mask = torch.ones_like(ids)
    mask[0, :5] = 0
    got = ours.generate(ids, 6, attention_mask=mask)
    want = hf.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=False)
    assert torch.equal(got, want)


def test_kv_cache_decoding_equals_full_recomputation(pair, ids):
    ours, _, _ = pair
    with torch.no_grad():
        full = ours(ids).logits
        cache = ours.new_cache()
        parts = [ours(ids[:, :6], cache=cache).logits, ours(ids[:, 6:9], cache=cache).logits]
        parts += [ours(ids[:, t : t + 1], cache=cache).logits for t in range(9, 13)]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=0, atol=1e-5)


def test_transformers4_style_config(tmp_path_factory, ids):
    """A config.json with top-level rope_theta / rope_scaling (transformers 4) reads the same."""
    ours, hf, path = make(tmp_path_factory, "mqa-tied-bias-llama3")
    raw = json.loads((Path(path) / "config.json").read_text())
    rope = raw.pop("rope_parameters")
    raw["rope_theta"] = rope.pop("rope_theta")
    raw["rope_scaling"] = rope
    (Path(path) / "config.json").write_text(json.dumps(raw))
    old = qkv.models.load(path)
    assert old.config.rope_scaling["rope_type"] == "llama3"
    with torch.no_grad():
        torch.testing.assert_close(old(ids).logits, ours(ids).logits, rtol=0, atol=0)


def test_inference_mode_forward_and_generate(pair, ids):
    """torch.inference_mode (what servers use) gives the same logits and tokens as no_grad."""
    ours, _, _ = pair
    with torch.no_grad():
        want = ours(ids).logits
    with torch.inference_mode():
        torch.testing.assert_close(ours(ids).logits, want, rtol=0, atol=1e-6)
        assert torch.equal(ours.generate(ids, 3), ours.generate(ids.clone(), 3))
