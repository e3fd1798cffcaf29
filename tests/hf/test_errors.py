"""Bad input to qkv.hf: clear messages, nothing downloaded, transformers never imported by `import qkv`."""

import subprocess
import sys

import pytest
import torch

import qkv
import qkv.hf
from qkv.hf.masks import recover


def test_import_qkv_does_not_import_transformers():
    code = (
        "import sys, qkv, qkv.lens.trace; qkv.trace; "
        "assert 'transformers' not in sys.modules, 'import qkv imported transformers'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_a_family_outside_the_interface_is_named_with_what_works(tmp_path):
    from transformers import BloomConfig, BloomModel

    torch.manual_seed(0)
    BloomModel(BloomConfig(vocab_size=64, hidden_size=32, n_layer=1, n_head=4)).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"bloom .*not through transformers.AttentionInterface.*gpt2.*eager"):
        qkv.trace("a b c", model=str(tmp_path))
    with pytest.raises(ValueError, match="bloom"):
        qkv.hf.wrap(BloomModel(BloomConfig(vocab_size=64, hidden_size=32, n_layer=1, n_head=4)))


def test_unknown_hub_id_is_never_downloaded(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ValueError, match=r"not in the local Hugging Face cache.*never downloads"):
        qkv.trace("a b c", model="nobody-xyz/not-a-model")
    assert not any(tmp_path.iterdir()), "something was written to the hub cache"


def test_model_without_tokenizer_says_how_to_fix():
    from .conftest import build

    with pytest.raises(ValueError, match="has no tokenizer; pass tokenizer="):
        qkv.trace("a b", model=build("llama", lm=False))


def test_tokenizer_with_a_native_model_is_refused():
    with pytest.raises(ValueError, match="tokenizer= goes with a transformers model"):
        qkv.trace("a b", model="minilm", tokenizer=object())


def test_recover_returns_structure_only_when_exact():
    L = 6
    causal = torch.ones(L, L).tril().bool().view(1, 1, L, L)
    m = recover(causal, L, L)
    assert "causal" in repr(m)
    window = causal & ~torch.ones(L, L).tril(-3).bool()  # the last 3 keys
    assert "sliding_window(2, 0" in repr(recover(window, L, L))
    keys = torch.tensor([[1, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 1]]).bool()
    padded = causal & keys.view(2, 1, 1, L)
    got = recover(padded, L, L)
    assert torch.equal(got.dense(2, 1, L, L), padded)
    holes = causal.clone()
    holes[0, 0, 4, 1] = False  # not a band, not padding: the tensor itself
    assert "tensor_mask" in repr(recover(holes, L, L))
    additive = torch.zeros(1, 1, L, L).masked_fill(~causal, torch.finfo(torch.float32).min)
    assert "causal" in repr(recover(additive, L, L))
    with pytest.raises(ValueError, match=r"expected a mask of shape \(B, 1\|H, 6, >= 6\)"):
        recover(causal[0], L, L)


def test_dense_4d_masks_from_the_user_run_with_the_recovered_structure(spy_impls):
    from .conftest import build, run

    model = build("llama", lm=False)
    ids = torch.randint(3, 96, (1, 256))
    L = ids.shape[1]
    band = torch.ones(L, L).tril().bool() & ~torch.ones(L, L).tril(-40).bool()  # a window of 40 keys
    mask4d = torch.zeros(1, 1, L, L).masked_fill(~band, torch.finfo(torch.float32).min)
    want = run(model, "eager", input_ids=ids, attention_mask=mask4d).last_hidden_state
    spy_impls.clear()
    got = run(model, "qkv", input_ids=ids, attention_mask=mask4d).last_hidden_state
    assert (got - want).abs().max().item() <= 1e-5
    assert spy_impls == ["tiled", "tiled"], spy_impls
