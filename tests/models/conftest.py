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
