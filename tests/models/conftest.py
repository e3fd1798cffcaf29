"""Fixtures for the model tests: the embedded MiniLM in qkv and in transformers (the oracle)."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

SENTENCES = ["The cat sat on the mat because it was tired.", "It was tired."]


@pytest.fixture(scope="session")
def minilm():
    import qkv.models

    return qkv.models.load("minilm")


@pytest.fixture(scope="session")
def minilm_path():
    import qkv.models

    return str(qkv.models.resolve("minilm"))


@pytest.fixture(scope="session")
def hf_minilm(minilm_path):
    transformers = pytest.importorskip("transformers")
    return transformers.BertModel.from_pretrained(minilm_path, attn_implementation="eager").eval()


def save_hf(model, path, **kwargs):
    """Save a transformers model as safetensors (+ config.json) into ``path``; return the path as str."""
    model.save_pretrained(str(path), safe_serialization=True, **kwargs)
    return str(path)


def max_rel_err(a, b):
    """max |a - b| / max |b|: an error measure that does not vanish with tiny logits."""
    return ((a - b).abs().max() / b.abs().max()).item()
