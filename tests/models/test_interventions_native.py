"""Interventions on qkv's native Llama (GQA, RoPE) and GPT-2: zero-ablating a head and the logit difference equal
transformers' eager model with the output projection's input edited by a forward pre-hook (the oracle)."""

import pytest
import torch

import qkv.models
from qkv import lens
from qkv.lens.effects import forward_rows
from qkv.lens.interventions import Target, compile_edits
from qkv.lens.loading import adapt

from .conftest import save_hf

transformers = pytest.importorskip("transformers")
HEAD, D = 1, 16


def _llama():
    return transformers.LlamaForCausalLM(
        transformers.LlamaConfig(
            hidden_size=64,
            num_attention_heads=4,
            num_key_value_heads=2,
            num_hidden_layers=2,
            intermediate_size=96,
            vocab_size=89,
            max_position_embeddings=64,
            initializer_range=0.2,
            attn_implementation="eager",
        )
    ), "model.layers.1.self_attn.o_proj"


def _gpt2():
    return transformers.GPT2LMHeadModel(
        transformers.GPT2Config(
            n_embd=64, n_head=4, n_layer=2, vocab_size=89, n_positions=64, attn_implementation="eager"
        )
    ), "transformer.h.1.attn.c_proj"


@pytest.mark.parametrize("build", [_llama, _gpt2], ids=["llama", "gpt2"])
def test_native_zero_ablation_and_logit_diff_equal_the_pre_hook(build, tmp_path):
    torch.manual_seed(0)
    hf, o_proj = build()
    hf = hf.eval()
    model = qkv.models.load(save_hf(hf, tmp_path))
    ids = [5, 17, 33, 2, 60, 41, 8]
    adapter = adapt(model)
    target = Target(adapter, "", [f"t{i}" for i in ids], [False] * len(ids), ids=ids)

    def zero(_module, args):
        x = args[0].clone()
        x[..., HEAD * D : (HEAD + 1) * D] = 0
        return (x,)

    handle = hf.get_submodule(o_proj).register_forward_pre_hook(zero)
    try:
        with torch.no_grad():
            want = hf(input_ids=torch.tensor([ids])).logits[0]
    finally:
        handle.remove()
    with torch.no_grad():
        plain = hf(input_ids=torch.tensor([ids])).logits[0]
    fwd = forward_rows(adapter, target, [[], compile_edits(target, [lens.ablate(1, HEAD)])])
    torch.testing.assert_close(fwd.logits[0], plain, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(fwd.logits[1], want, atol=1e-4, rtol=1e-4)
    diff = lens.logit_diff(3, 4, position=-1).bind(target, fwd)(fwd)
    torch.testing.assert_close(
        diff, torch.stack([plain[-1, 3] - plain[-1, 4], want[-1, 3] - want[-1, 4]]), atol=1e-4, rtol=1e-4
    )
