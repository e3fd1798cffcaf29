"""qkv.nn.MultiHeadAttention and the model families compile whole: ``torch.compile(fullgraph=True)``, forward
and backward, tiny random sizes; the compiled logits and gradients equal eager mode's (the oracle)."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo as dynamo

from qkv import masks
from qkv.models import BertModel, GPT2Model, LlamaModel, bert, gpt2, llama
from qkv.nn import MultiHeadAttention

VOCAB = 50


def _llama():
    raw = {
        "hidden_size": 32,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "num_hidden_layers": 1,
        "vocab_size": VOCAB,
        "intermediate_size": 64,
        "max_position_embeddings": 128,
    }
    return LlamaModel(llama.read_config(raw, "tiny-llama"))


def _gpt2():
    raw = {"n_embd": 32, "n_head": 4, "n_layer": 1, "vocab_size": VOCAB, "n_positions": 128}
    return GPT2Model(gpt2.read_config(raw, "tiny-gpt2"))


def _bert():
    raw = {
        "hidden_size": 32,
        "num_attention_heads": 4,
        "num_hidden_layers": 1,
        "vocab_size": VOCAB,
        "intermediate_size": 64,
        "max_position_embeddings": 128,
    }
    return BertModel(bert.read_config(raw, "tiny-bert"))


FAMILIES = {"llama": _llama, "gpt2": _gpt2, "bert": _bert}


def _step(model, ids, am):
    """Hidden states and the gradients of every parameter for one loss."""
    model.zero_grad(set_to_none=True)
    h = model(ids, am).last_hidden_state
    w = torch.linspace(-1, 1, h.shape[-1], dtype=h.dtype)
    (h * w).sum().backward()
    # a parameter the loss does not use (the LM head) gets None in eager mode, zeros from a compiled graph
    return h.detach(), [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in model.parameters()]


@pytest.mark.slow  # 8-18 s each: one compile of a forward and backward graph
@pytest.mark.parametrize("family", list(FAMILIES))
def test_model_family_compiles_whole_forward_and_backward(family):
    """Right padding on one row (the key mask enters the tiled op as a bool tensor), the model's own mask."""
    torch.manual_seed(0)
    model = FAMILIES[family]().double()
    ids = torch.randint(0, VOCAB, (2, 24))
    am = torch.ones(2, 24, dtype=torch.long)
    am[1, 17:] = 0
    dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    h, grads = _step(compiled, ids, am)
    h0, grads0 = _step(model, ids, am)
    real = am.bool()[:, :, None]
    assert torch.allclose(torch.where(real, h, 0), torch.where(real, h0, 0), atol=1e-10)
    assert len(grads) == len(grads0) > 0 and any(g.abs().sum() > 0 for g in grads)
    assert all(torch.allclose(g, g0, atol=1e-9) for g, g0 in zip(grads, grads0))


def test_multi_head_attention_compiles_with_a_window_mask():
    torch.manual_seed(0)
    mha = MultiHeadAttention(32, 4, num_kv_heads=2, impl="tiled").double()
    x = torch.randn(2, 40, 32, dtype=torch.float64, requires_grad=True)
    mask = masks.sliding_window(6)
    dynamo.reset()
    compiled = torch.compile(lambda x: mha(x, mask=mask), fullgraph=True, backend="aot_eager")
    got = compiled(x)
    (gx,) = torch.autograd.grad(got.sum(), [x])
    want = mha(x, mask=mask)
    (wx,) = torch.autograd.grad(want.sum(), [x])
    assert torch.allclose(got, want, atol=1e-10) and torch.allclose(gx, wx, atol=1e-10)
