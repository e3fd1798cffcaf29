"""Bad checkpoints and bad inputs give ValueErrors that name the file/tensor and the fix."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import qkv.models

VOCAB = 50


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A tiny BERT checkpoint written with the MiniLM tokenizer (so inputs can be too long)."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        vocab_size=VOCAB,
        max_position_embeddings=16,
    )
    path = tmp_path_factory.mktemp("bert")
    transformers.BertModel(cfg).save_pretrained(str(path), safe_serialization=True)
    return path


@pytest.fixture
def ckpt(good, tmp_path):
    """A fresh copy to break."""
    dst = tmp_path / "ckpt"
    shutil.copytree(good, dst)
    return dst


def edit_config(path: Path, **changes):
    raw = json.loads((path / "config.json").read_text())
    raw.update(changes)
    (path / "config.json").write_text(json.dumps(raw))


def edit_weights(path: Path, fn):
    tensors = load_file(str(path / "model.safetensors"))
    fn(tensors)
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})


def test_good_checkpoint_loads_and_matches(good):
    transformers = pytest.importorskip("transformers")
    ours = qkv.models.load(good)
    hf = transformers.BertModel.from_pretrained(str(good), attn_implementation="eager").eval()
    ids = torch.randint(0, VOCAB, (2, 9))
    with torch.no_grad():
        assert (ours(ids).last_hidden_state - hf(ids).last_hidden_state).abs().max() < 1e-5
    assert ours.tokenizer is None and ours.config.pooling is None


def test_prefixed_bert_checkpoint(tmp_path, good):
    """BertForMaskedLM saves 'bert.'-prefixed keys plus an MLM head: it loads, the head is ignored."""
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig.from_pretrained(str(good))
    mlm = transformers.BertForMaskedLM(cfg).eval()
    mlm.save_pretrained(str(tmp_path), safe_serialization=True)
    ours = qkv.models.load(tmp_path)
    ids = torch.randint(0, VOCAB, (1, 7))
    with torch.no_grad():
        assert (ours(ids).last_hidden_state - mlm.bert(ids).last_hidden_state).abs().max() < 1e-5


def test_missing_config(ckpt):
    (ckpt / "config.json").unlink()
    with pytest.raises(ValueError, match=r"config\.json is missing.*save_pretrained"):
        qkv.models.load(ckpt)


def test_invalid_config_json(ckpt):
    (ckpt / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"config\.json is not valid JSON"):
        qkv.models.load(ckpt)


def test_missing_weights(ckpt):
    (ckpt / "model.safetensors").unlink()
    torch.save({}, ckpt / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"no weights in .*model\.safetensors.*pytorch_model\.bin.*safe_serialization"):
        qkv.models.load(ckpt)


def test_unknown_model_type(ckpt):
    edit_config(ckpt, model_type="mamba")
    with pytest.raises(ValueError, match=r"model_type 'mamba' is not supported; known model types: bert, gpt2, llama"):
        qkv.models.load(ckpt)


def test_wrong_shaped_tensor(ckpt):
    edit_weights(ckpt, lambda t: t.__setitem__("encoder.layer.1.attention.self.key.weight", torch.zeros(32, 31)))
    with pytest.raises(
        ValueError,
        match=r"model\.safetensors: tensor 'encoder\.layer\.1\.attention\.self\.key\.weight' "
        r"has shape \(32, 31\) but config\.json implies \(32, 32\)",
    ):
        qkv.models.load(ckpt)


def test_config_disagreeing_with_weights(ckpt):
    edit_config(ckpt, hidden_size=48, num_attention_heads=4)
    with pytest.raises(ValueError, match=r"has shape .* but config\.json implies .*use the config saved with these"):
        qkv.models.load(ckpt)


def test_missing_tensor(ckpt):
    edit_weights(ckpt, lambda t: t.pop("encoder.layer.0.output.dense.bias"))
    with pytest.raises(
        ValueError,
        match=r"tensor 'encoder\.layer\.0\.output\.dense\.bias' \(for layers\.0\.down\.bias\) "
        r"is missing from model\.safetensors",
    ):
        qkv.models.load(ckpt)


def test_weights_of_another_architecture(ckpt):
    edit_weights(ckpt, lambda t: [t.__setitem__("x." + k, t.pop(k)) for k in list(t)])
    with pytest.raises(
        ValueError, match=r"none of the tensors a bert model needs.*Is model_type in config\.json right"
    ):
        qkv.models.load(ckpt)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_safetensors(ckpt, damage):
    f = ckpt / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(b"\x13\x00garbage, not a safetensors header" if damage == "garbage" else data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"model\.safetensors is not a readable safetensors file .*corrupt.*re-save"):
        qkv.models.load(ckpt)


def test_missing_shard(ckpt):
    (ckpt / "model.safetensors").unlink()
    index = {"metadata": {}, "weight_map": {"embeddings.word_embeddings.weight": "model-00001-of-00002.safetensors"}}
    (ckpt / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match=r"lists shards that are missing: .*model-00001-of-00002\.safetensors"):
        qkv.models.load(ckpt)


def test_missing_config_key(ckpt):
    raw = json.loads((ckpt / "config.json").read_text())
    del raw["num_attention_heads"]
    (ckpt / "config.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=r"config\.json has no 'num_attention_heads'"):
        qkv.models.load(ckpt)


def test_unknown_names(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ValueError, match=r"'nobody/nothing' is not in the local Hugging Face cache.*never downloads"):
        qkv.models.load("nobody/nothing")
    with pytest.raises(ValueError, match=r"no model called 'not-a-model'"):
        qkv.models.load("not-a-model")
    with pytest.raises(ValueError, match=r"dtype must be a floating torch\.dtype"):
        qkv.models.load("minilm", dtype=torch.int64)


def test_hub_id_resolves_through_the_local_cache(tmp_path, monkeypatch, good):
    snap = tmp_path / "hub" / "models--someone--tiny-bert" / "snapshots" / "abc123"
    shutil.copytree(good, snap)
    (snap.parent.parent / "refs").mkdir()
    (snap.parent.parent / "refs" / "main").write_text("abc123")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    assert qkv.models.resolve("someone/tiny-bert") == snap
    model = qkv.models.load("someone/tiny-bert")
    assert model.config.name == "someone/tiny-bert" and model.config.hidden_size == 32


def test_input_longer_than_max_positions(good):
    model = qkv.models.load(good)
    with pytest.raises(ValueError, match=r"input has 17 tokens but .* accepts at most 16 positions.*truncate=True"):
        model(torch.zeros(1, 17, dtype=torch.long))
    model(torch.zeros(1, 16, dtype=torch.long))  # the limit itself is fine


def test_bad_input_ids(good):
    model = qkv.models.load(good)
    with pytest.raises(ValueError, match=r"input_ids must be an integer tensor \(B, L\).*unsqueeze\(0\)"):
        model(torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"input_ids must be in \[0, 50\).*got values in \[0, 50\]"):
        model(torch.tensor([[0, 50]]))
    with pytest.raises(ValueError, match=r"attention_mask must have shape .*\(1, 2\)"):
        model(torch.tensor([[0, 1]]), torch.ones(1, 3, dtype=torch.long))


def test_generate_past_max_positions(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=20, n_positions=8)
    transformers.GPT2LMHeadModel(cfg).save_pretrained(str(tmp_path), safe_serialization=True)
    model = qkv.models.load(tmp_path)
    with pytest.raises(ValueError, match=r"5 prompt tokens \+ 4 new exceed the model's 8 positions"):
        model.generate(torch.zeros(1, 5, dtype=torch.long), 4)
    assert model.generate(torch.zeros(1, 5, dtype=torch.long), 3).shape == (1, 8)
