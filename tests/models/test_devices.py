"""Model loaders on every available device (``device`` fixture): ``qkv.models.load(path, device=, dtype=)`` puts
every parameter there as it is read, and the model computes there -- in float32 exactly as on the CPU, in
bfloat16/float16 close to it (attention, softmax and norms accumulate in float32)."""

from __future__ import annotations

import pytest
import torch

import qkv.models

from .conftest import save_hf

transformers = pytest.importorskip("transformers")
VOCAB = 89


@pytest.fixture(scope="module")
def llama_path(tmp_path_factory):
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        hidden_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_hidden_layers=2,
        intermediate_size=96,
        vocab_size=VOCAB,
        max_position_embeddings=64,
        initializer_range=0.2,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    return save_hf(transformers.LlamaForCausalLM(cfg).eval(), tmp_path_factory.mktemp("llama"))


@pytest.fixture(scope="module")
def cpu_logits(llama_path):
    ids = torch.randint(0, VOCAB, (2, 13), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        return ids, qkv.models.load(llama_path)(ids).logits


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_load_on_device_in_dtype(device, dtype, llama_path, cpu_logits):
    ids, ref = cpu_logits
    model = qkv.models.load(llama_path, device=device, dtype=dtype)
    assert {p.device.type for p in model.parameters()} == {device.type}
    assert {p.dtype for p in model.parameters()} == {dtype}
    with torch.no_grad():
        logits = model(ids.to(device)).logits
    assert logits.device.type == device.type
    err = ((logits.float().cpu() - ref).abs().max() / ref.abs().max()).item()
    assert err < (1e-5 if dtype == torch.float32 else 5e-2), err


def test_greedy_generation_on_device_matches_the_cpu(device, llama_path):
    ids = torch.randint(0, VOCAB, (1, 5), generator=torch.Generator().manual_seed(3))
    want = qkv.models.load(llama_path).generate(ids, max_new_tokens=6)
    got = qkv.models.load(llama_path, device=device).generate(ids.to(device), max_new_tokens=6)
    assert torch.equal(got.cpu(), want)


def test_a_bad_device_is_a_clear_error(llama_path):
    with pytest.raises(ValueError, match="device must be a torch device"):
        qkv.models.load(llama_path, device="gpu0")
