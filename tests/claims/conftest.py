"""The embedded MiniLM for the claims tests (loaded once per process, shared with the lens)."""
import pytest


@pytest.fixture(scope="session")
def minilm():
    from qkv.lens.trace import load_model

    return load_model("minilm")
