"""qkv.trace on MiniLM against transformers' BertModel (eager attention) and closed-form recomputation."""

import json
import math

import pytest
import torch

import qkv
from qkv.lens.attribution import normalise_rows
from qkv.lens.trace import SCHEMA_VERSION, Trace

from .conftest import SENTENCE


@pytest.fixture(scope="session")
def hf_out(hf_bert, cat_trace, minilm):
    ids = torch.tensor([minilm.tokenizer.encode(SENTENCE).ids])  # (B=1, L)
    with torch.no_grad():
        return hf_bert(ids, output_attentions=True, output_hidden_states=True)


def test_tokens_and_offsets_spell_the_text(cat_trace):
    t = cat_trace
    assert t.tokens == ["[CLS]", "the", "cat", "sat", "on", "the", "mat", "because", "it", "was", "tired", ".", "[SEP]"]
    assert t.special == [True] + [False] * 11 + [True]
    assert [SENTENCE[s:e].lower() for (s, e), sp in zip(t.offsets, t.special) if not sp] == t.tokens[1:-1]
    N, H, L = 6, 12, len(t.tokens)
    assert t.weights.shape == t.scores.shape == t.scaled.shape == (N, H, L, L)
    assert t.q.shape == t.k.shape == t.v.shape == t.output.shape == (N, H, L, 32)


def test_weights_equal_transformers_attention(cat_trace, hf_out):
    hf = torch.stack([a[0] for a in hf_out.attentions])  # (N, H, L, L)
    assert torch.allclose(cat_trace.weights, hf, atol=2e-6, rtol=0), (cat_trace.weights - hf).abs().max()


def test_recomputing_softmax_from_q_and_k_reproduces_weights(cat_trace):
    t = cat_trace
    d = t.q.shape[-1]
    scores = t.q.double() @ t.k.double().transpose(-2, -1)  # (N, H, L, L)
    assert (t.scores.double() - scores).abs().max() <= 1e-4 * scores.abs().max()  # fp32 dot products
    assert torch.allclose(t.scaled.double(), t.scores.double() / math.sqrt(d), atol=1e-6, rtol=1e-6)
    recomputed = torch.softmax(scores / math.sqrt(d), dim=-1)
    assert (t.weights.double() - recomputed).abs().max() <= 1e-6
    out = t.weights.double() @ t.v.double()  # (N, H, L, D): the recorded per-head output is weights @ v
    assert (t.output.double() - out).abs().max() <= 1e-5


def test_value_norm_attribution_equals_direct_computation_from_transformers(cat_trace, hf_bert, hf_out):
    """||a_ij f(v_j)|| with v_j and W_O taken from transformers' own weights and hidden states."""
    t, H, D = cat_trace, 12, 32
    for n in (0, 3, 5):
        layer = hf_bert.encoder.layer[n].attention
        x = hf_out.hidden_states[n][0].double()  # (L, E): the input of layer n
        v = x @ layer.self.value.weight.double().T + layer.self.value.bias.double()  # (L, H*D), bias included
        w_o = layer.output.dense.weight.double()  # (E, H*D)
        a = hf_out.attentions[n][0].double()  # (H, L, L)
        direct = torch.empty(H, len(t), len(t), dtype=torch.float64)
        for h in range(H):
            fv = v[:, h * D : (h + 1) * D] @ w_o[:, h * D : (h + 1) * D].T  # (L, E): f(v_j) = v_j W_O,h
            direct[h] = (a[h].unsqueeze(-1) * fv.unsqueeze(0)).norm(dim=-1)  # ||a_ij f(v_j)||, (L, L)
        assert torch.allclose(t.value_norms[n].double(), direct, rtol=1e-4, atol=1e-6)
        share = direct / direct.sum(-1, keepdim=True)
        assert torch.allclose(t.values[n].double(), share, atol=1e-5)


def test_rollout_rows_sum_to_one_and_match_a_direct_loop(cat_trace):
    t = cat_trace
    assert torch.allclose(t.rollout.sum(-1), torch.ones(6, len(t)), atol=1e-5)
    acc = torch.eye(len(t), dtype=torch.float64)
    for n in range(6):
        a = 0.5 * t.weights[n].double().mean(0) + 0.5 * torch.eye(len(t), dtype=torch.float64)
        a = a / a.sum(-1, keepdim=True)
        acc = a @ acc
        assert torch.allclose(t.rollout[n].double(), acc, atol=1e-5)


def test_the_seed_example_has_a_head_where_it_prefers_cat(cat_trace):
    best = cat_trace.heads("it", "cat", "mat")[0]
    assert best.prefer > best.over
    assert best.diff == pytest.approx(
        float(cat_trace.attention(best.layer, best.head)[8, 2] - cat_trace.attention(best.layer, best.head)[8, 6])
    )


def test_index_accepts_tokens_occurrences_and_ints(cat_trace):
    t = cat_trace
    assert t.index("it") == 8
    assert t.index("The") == 1 and t.index("the@2") == 5 and t.index("the@1") == 1
    assert t.index(8) == 8 and t.index(-1) == 12
    assert t.index("[SEP]") == 12


@pytest.mark.parametrize(
    "bad, fragment",
    [
        ("cta", "close matches: cat"),
        ("the@3", "only 2 occurrence"),
        (13, "out of range"),
        ("", "non-empty"),
        ("zebra", "not in the text"),
    ],
)
def test_index_errors_say_what_to_do(cat_trace, bad, fragment):
    with pytest.raises(ValueError, match=fragment):
        cat_trace.index(bad)


def test_top_is_sorted_and_matches_the_matrix(cat_trace):
    t = cat_trace
    top = t.top("it", k=4, layer=5, head=11)
    row = t.attention(5, 11)[8]
    assert [a.index for a in top] == torch.argsort(row, descending=True)[:4].tolist()
    assert [a.value for a in top] == pytest.approx(row[[a.index for a in top]].tolist())
    mean = t.top("it", k=1, measure="values")[0]
    assert mean.value == pytest.approx(float(t.values[:, :, 8].mean((0, 1)).max()))
    roll = t.top("it", k=2, measure="rollout")
    assert roll[0].value == pytest.approx(float(t.rollout[-1, 8].max()))
    assert all(not t.special[a.index] for a in t.top("it", k=5, skip_special=True))


def test_measure_errors(cat_trace):
    with pytest.raises(ValueError, match="measure must be one of weights, values, rollout"):
        cat_trace.top("it", measure="gradients")
    with pytest.raises(ValueError, match="rollout combines all heads"):
        cat_trace.top("it", head=2, measure="rollout")
    with pytest.raises(ValueError, match="6 layers"):
        cat_trace.attention(6, 0)
    with pytest.raises(ValueError, match="12 heads"):
        cat_trace.breakdown("it", 0, 12)
    with pytest.raises(ValueError, match="same token"):
        cat_trace.heads("it", "cat", "cat@1")


def test_breakdown_is_the_chain_for_one_token(cat_trace):
    t = cat_trace
    rows = t.breakdown("it", 5, 11)
    assert [r.token for r in rows] == t.tokens
    assert [r.score for r in rows] == pytest.approx(t.scores[5, 11, 8].tolist())
    assert [r.scaled for r in rows] == pytest.approx([r.score / math.sqrt(32) for r in rows], abs=1e-5)
    assert [r.weight for r in rows] == pytest.approx(
        torch.softmax(torch.tensor([r.scaled for r in rows]), 0).tolist(), abs=1e-6
    )
    assert sum(r.value_share for r in rows) == pytest.approx(1.0)
    assert [r.value_norm for r in rows] == pytest.approx((t.weights[5, 11, 8] * t.fv_norms[5, 11]).tolist())


def test_breakdown_of_a_trace_without_scores_names_the_missing_step(cat_trace):
    t = cat_trace
    weights_only = Trace(t.text, t.tokens, t.offsets, t.special, t.model, t.weights, None, None, t.fv_norms)
    with pytest.raises(ValueError, match=r"this trace did not record 'scores'; trace with steps including 'scores'"):
        weights_only.breakdown("it", 5, 11)


def test_to_json_follows_the_documented_schema(cat_trace):
    doc = json.loads(cat_trace.to_json())
    assert doc["schema"] == "qkv.trace" and doc["version"] == SCHEMA_VERSION == 1
    assert doc["text"] == SENTENCE
    assert set(doc["model"]) >= {"name", "model_type", "num_layers", "num_heads", "num_kv_heads", "head_dim"}
    L = len(cat_trace)
    assert [tok["text"] for tok in doc["tokens"]] == cat_trace.tokens
    assert set(doc["tokens"][2]) == {"index", "text", "start", "end", "special"}
    assert len(doc["layers"]) == 6
    for lay in doc["layers"]:
        assert set(lay) == {"layer", "scores", "scaled", "weights", "values", "value_norms", "rollout"}
        for key in ("scores", "scaled", "weights", "values"):
            assert torch.tensor(lay[key]).shape == (12, L, L)
        assert torch.tensor(lay["value_norms"]).shape == (12, L)
        assert torch.allclose(torch.tensor(lay["rollout"]).sum(-1), torch.ones(L), atol=1e-3)
        assert torch.allclose(torch.tensor(lay["weights"]), cat_trace.weights[lay["layer"]], atol=1e-5)


def test_trace_by_name_and_by_model_agree(cat_trace):
    again = qkv.trace(SENTENCE)  # by name: the per-process cache gives the same model
    assert torch.equal(again.weights, cat_trace.weights)


def test_bad_text_raises_clear_errors(minilm):
    with pytest.raises(ValueError, match="text is empty"):
        qkv.trace("   ", model=minilm)
    with pytest.raises(ValueError, match="512"):
        qkv.trace("word " * 600, model=minilm)
    assert len(qkv.trace("word " * 600, model=minilm, truncate=True)) == 512
    with pytest.raises(ValueError, match="model must be a name"):
        qkv.trace("a cat", model=42)


def test_synthetic_trace_without_value_norms_has_values_equal_weights():
    w = torch.softmax(torch.randn(2, 3, 4, 4), -1)  # (N, H, L, L)
    t = Trace.from_tensors("a b c d", list("abcd"), weights=w)
    assert torch.allclose(t.values, normalise_rows(w))
    with pytest.raises(ValueError, match="L = 3 tokens"):
        Trace.from_tensors("a b c", list("abc"), weights=w)
