"""``qkv.claims``: synthetic figures against closed form, real figures against the forward pass (and
transformers), verdicts against their thresholds, and ``qkv claims`` end to end."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import qkv
from qkv.claims import (
    CONTROL_SENTENCE,
    CORPUS,
    DIMS,
    ESSAY_SENTENCE,
    FAILS,
    HOLDS,
    PARTLY,
    VERDICTS,
    Thresholds,
    coreference,
    coreference_verdict,
    decoupling_verdict,
    entropy,
    evaluate,
    loglog_slope,
    max_weight,
    probe_verdict,
    rankdata,
    real_decoupling,
    real_saturation,
    real_sharpness,
    real_variance,
    saturation_verdict,
    sharpening_verdict,
    softmax_jacobian,
    softmax_jacobian_norm,
    spearman,
    synthetic_scores,
    top_mass,
    variance_verdict,
)
from qkv.claims.real import independent_variance, linear_weights
from qkv.claims.synthetic import sample_scores
from qkv.view.claims_view import FIGURES, markdown_table, save_figures

ROWS, KEYS = 1024, 16


# ------------------------------------------------------------------------------------------ synthetic
@pytest.fixture(scope="module")
def synthetic():
    return synthetic_scores(dims=DIMS, rows=ROWS, keys=KEYS, seed=0)


def _relative_se(d: int, rows: int = ROWS, keys: int = KEYS) -> float:
    """Relative standard error of the sample variance of q.k: Var(x^2)/d^2 = 2 + 6/d; the keys of one row share
    q, so their squares correlate by 1/(d+3) (design effect 1 + (keys-1)/(d+3))."""
    return math.sqrt((2 + 6 / d) / (rows * keys) * (1 + (keys - 1) / (d + 3)))


def test_synthetic_variance_is_d_k_and_scaled_is_one(synthetic):
    assert [r.d_k for r in synthetic.rows] == [4, 8, 16, 32, 64, 128, 256, 512, 1024]
    for r in synthetic.rows:
        tol = 5 * _relative_se(r.d_k)
        assert abs(r.var_raw / r.d_k - 1) < tol, (r.d_k, r.var_raw)
        assert abs(r.var_scaled - 1) < tol, (r.d_k, r.var_scaled)
        assert r.var_scaled == pytest.approx(r.var_raw / r.d_k, rel=1e-9)
    assert abs(synthetic.slope - 1) < 0.03
    assert abs(synthetic.intercept) < 0.1  # Var = 1 * d_k^1


def test_synthetic_softmax_matches_its_exact_distribution(synthetic):
    """Given q, the scores q.k_j are iid N(0, |q|^2) with |q|^2 ~ chi2(d): draw rows from that law directly."""
    gen = torch.Generator().manual_seed(123)
    for r in (synthetic.at(16), synthetic.at(64), synthetic.at(1024)):
        n = 8192
        radius = torch.randn(n, r.d_k, generator=gen, dtype=torch.float64).pow(2).sum(-1, keepdim=True).sqrt()
        z = torch.randn(n, KEYS, generator=gen, dtype=torch.float64)
        for scores, got in (
            (radius * z, (r.max_unscaled, r.entropy_unscaled, r.jacobian_unscaled)),
            (radius * z / math.sqrt(r.d_k), (r.max_scaled, r.entropy_scaled, r.jacobian_scaled)),
        ):
            p = torch.softmax(scores, -1)
            for measure, value in zip((max_weight(p), entropy(p), softmax_jacobian_norm(p)), got):
                se = float(measure.std()) * math.sqrt(1 / n + 1 / ROWS)
                assert abs(value - float(measure.mean())) < 5 * se + 1e-9, (r.d_k, value, float(measure.mean()))


def test_unscaled_softmax_saturates_as_d_k_grows(synthetic):
    max_u = [r.max_unscaled for r in synthetic.rows]
    jac_u = [r.jacobian_unscaled for r in synthetic.rows]
    assert all(a < b for a, b in zip(max_u, max_u[1:]))
    assert all(a > b for a, b in zip(jac_u[2:], jac_u[3:]))
    assert max_u[-1] > 0.95 and synthetic.at(1024).entropy_unscaled < 0.15
    scaled = [r.jacobian_scaled for r in synthetic.rows]
    assert max(scaled) - min(scaled) < 0.05  # the scale keeps the softmax in one regime


def test_synthetic_draw_is_reproducible_and_seeded():
    a = sample_scores(32, 64, 8, seed=0)
    assert torch.equal(a, sample_scores(32, 64, 8, seed=0))
    assert not torch.equal(a, sample_scores(32, 64, 8, seed=1))
    # each d_k has its own stream: what else is measured does not change its numbers
    alone = synthetic_scores(dims=(4, 32), rows=64, keys=8)
    assert alone.at(32) == synthetic_scores(dims=(32, 64), rows=64, keys=8).at(32)


# ------------------------------------------------------------------------------------------ measures
def test_softmax_jacobian_equals_autograd():
    scores = torch.randn(4, 7, dtype=torch.float64) * torch.tensor([[0.1], [1.0], [5.0], [30.0]], dtype=torch.float64)
    p = torch.softmax(scores, -1)
    for row in range(4):
        jac = torch.autograd.functional.jacobian(lambda s: torch.softmax(s, -1), scores[row])  # (7, 7)
        torch.testing.assert_close(softmax_jacobian(p)[row], jac)
        assert float(softmax_jacobian_norm(p)[row]) == pytest.approx(float(jac.norm()), rel=1e-9, abs=1e-15)


def test_softmax_jacobian_norm_closed_forms():
    for n in (2, 5, 16):
        uniform = torch.full((n,), 1.0 / n)
        assert float(softmax_jacobian_norm(uniform)) == pytest.approx(math.sqrt(1 / n - 1 / n**2))
    assert float(softmax_jacobian_norm(torch.tensor([0.0, 1.0, 0.0]))) == 0.0
    eps = 1e-4  # nearly one-hot: ||J|| = 2 p1 p2 without cancellation
    assert float(softmax_jacobian_norm(torch.tensor([1 - eps, eps]))) == pytest.approx(2 * (1 - eps) * eps, rel=1e-3)


def test_entropy_max_weight_top_mass_by_hand():
    p = torch.tensor([[0.5, 0.25, 0.25, 0.0], [1.0, 0.0, 0.0, 0.0]])
    assert entropy(p).tolist() == pytest.approx([1.5 * math.log(2), 0.0])
    assert max_weight(p).tolist() == [0.5, 1.0]
    assert top_mass(p, 1).tolist() == [0.5, 1.0] and top_mass(p, 3).tolist() == [1.0, 1.0]
    assert top_mass(p, 9).tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="k must be >= 1"):
        top_mass(p, 0)
    lin = linear_weights(torch.tensor([[1.0, 2.0, 3.0], [4.0, 4.0, 4.0]]))
    assert lin.tolist() == [[0.0, 1 / 3, 2 / 3], [1 / 3, 1 / 3, 1 / 3]]


def test_loglog_slope_and_errors():
    assert loglog_slope([1, 10, 100], [5, 500, 50000])[0] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="positive"):
        loglog_slope([1, 2], [1, -1])
    with pytest.raises(ValueError, match="equal length"):
        loglog_slope([1, 2, 3], [1, 2])


def test_rank_correlations_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=200), rng.normal(size=200)
    y = 0.5 * x + y
    x[:20] = np.round(x[:20])  # ties
    assert rankdata(x) == pytest.approx(stats.rankdata(x))
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic)
    from qkv.claims import pearson

    assert pearson(x, y) == pytest.approx(stats.pearsonr(x, y).statistic)


def test_independent_variance_is_the_variance_over_all_pairs():
    """The product of two empirical distributions is exactly independent: the formula equals the variance of
    q_i.k_j/sqrt(D) over every pair (i, j)."""
    gen = torch.Generator().manual_seed(0)
    D = 8
    q = torch.randn(50, 2, D, generator=gen, dtype=torch.float64) * torch.linspace(0.2, 3, D) + 0.7
    k = (
        torch.randn(40, 2, D, generator=gen, dtype=torch.float64)
        @ torch.randn(D, D, generator=gen, dtype=torch.float64)
        - 0.3
    )
    mean, var = independent_variance(q, k)
    for h in range(2):
        pairs = (q[:, h] @ k[:, h].T / math.sqrt(D)).flatten()  # (50 * 40,)
        assert float(mean[h]) == pytest.approx(float(pairs.mean()), rel=1e-9)
        assert float(var[h]) == pytest.approx(float(pairs.var(unbiased=False)), rel=1e-9)


# ------------------------------------------------------------------------------------------ verdicts
TH = Thresholds()
SYN_OK = [0.98, 1.01, 1.02]


@pytest.mark.parametrize(
    "slope, synthetic, real, expected",
    [
        (1.05, SYN_OK, [1.5] * 6, HOLDS),
        (1.15, SYN_OK, [1.5] * 6, PARTLY),  # slope outside 1 +/- 0.1
        (0.95, [0.98, 1.3], [1.5] * 6, PARTLY),  # a synthetic scaled variance outside [0.8, 1.25]
        (1.05, SYN_OK, [3.0] * 6, PARTLY),  # real scaled variance above 2 in every layer
        (1.05, SYN_OK, [1.9] * 4 + [2.1] * 2, HOLDS),  # 4/6 layers in the band: a majority
        (1.05, SYN_OK, [1.9] * 3 + [2.1] * 3, PARTLY),  # 3/6: not
        (1.05, SYN_OK, [0.49] * 6, PARTLY),
        (1.15, SYN_OK, [3.0] * 6, FAILS),
    ],
)
def test_variance_verdict_follows_the_numbers(slope, synthetic, real, expected):
    v = variance_verdict(slope, synthetic, real, TH)
    assert v.verdict == expected, v.reason


def _saturation(max_u=0.95, ratio=0.2, flat=(0.30, 0.31), real_ratio=0.4, gain=0.3):
    return saturation_verdict(max_u, ratio, list(flat), [real_ratio] * 6, [gain] * 6, TH).verdict


def test_saturation_verdict_flips_at_each_threshold():
    assert _saturation() == HOLDS
    assert _saturation(max_u=0.89) == PARTLY and _saturation(max_u=0.91) == HOLDS
    assert _saturation(ratio=0.51) == PARTLY and _saturation(ratio=0.49) == HOLDS
    assert _saturation(flat=(0.25, 0.31)) == PARTLY  # the scaled Jacobian moves by 19% across d_k
    assert _saturation(real_ratio=0.55) == PARTLY and _saturation(real_ratio=0.45) == HOLDS
    assert _saturation(gain=0.05) == PARTLY and _saturation(gain=0.15) == HOLDS
    assert _saturation(max_u=0.5, real_ratio=1.2) == FAILS


def test_sharpening_verdict_flips_at_the_factor():
    u = [0.1] * 6
    assert sharpening_verdict([0.31] * 6, u, TH).verdict == HOLDS
    assert sharpening_verdict([0.29] * 6, u, TH).verdict == FAILS
    assert sharpening_verdict([0.31] * 2 + [0.29] * 4, u, TH).verdict == PARTLY


def test_decoupling_verdict_flips_at_each_threshold():
    assert decoupling_verdict([0.2] * 6, 0.85, 0.1, TH).verdict == HOLDS
    assert decoupling_verdict([0.2] * 6, 0.75, 0.1, TH).verdict == PARTLY  # keys not close enough
    assert decoupling_verdict([0.2] * 6, 0.85, 0.35, TH).verdict == PARTLY  # values too similar
    assert decoupling_verdict([0.5] * 6, 0.85, 0.1, TH).verdict == PARTLY
    assert decoupling_verdict([-0.2] * 6, 0.85, 0.1, TH).verdict == HOLDS
    assert decoupling_verdict([0.75] * 6, 0.85, 0.1, TH).verdict == FAILS
    assert decoupling_verdict([-0.75] * 4 + [0.1] * 2, 0.85, 0.1, TH).verdict == FAILS


def test_probe_verdict_needs_the_interval_above_every_baseline():
    base = {"first": 0.6, "nearest": 0.5, "random": 0.5}
    assert probe_verdict(0.8, 0.61, 0.9, base).verdict == HOLDS
    assert probe_verdict(0.7, 0.59, 0.8, base).verdict == PARTLY  # above chance, not above the first noun
    assert "does not clear first" in probe_verdict(0.7, 0.59, 0.8, base).reason
    assert probe_verdict(0.55, 0.45, 0.65, base).verdict == FAILS
    assert probe_verdict(0.55, 0.50, 0.65, base).verdict == FAILS  # touching a baseline does not clear it


def test_coreference_verdict_flips_at_the_margin():
    assert coreference_verdict(0.06, -0.06, TH).verdict == HOLDS
    assert coreference_verdict(0.06, -0.04, TH).verdict == PARTLY  # does not switch to the mat
    assert coreference_verdict(0.06, 0.30, TH).verdict == PARTLY
    assert coreference_verdict(0.04, -0.06, TH).verdict == FAILS


def test_thresholds_are_used():
    strict = Thresholds(margin=0.5)
    assert coreference_verdict(0.3, -0.3, TH).verdict == HOLDS
    assert coreference_verdict(0.3, -0.3, strict).verdict == FAILS


# ------------------------------------------------------------------------------------------ real model
@pytest.fixture(scope="module")
def corpus_traces(minilm):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small matrices: one thread is fastest on a shared machine
    try:
        return {s: qkv.trace(s, model=minilm) for s in CORPUS[:8]}
    finally:
        torch.set_num_threads(threads)


def test_real_figures_change_with_the_input(corpus_traces):
    traces = list(corpus_traces.values())
    a, b = traces[:4], traces[4:]
    assert real_variance(a)[0].var_scaled != pytest.approx(real_variance(b)[0].var_scaled, rel=1e-3)
    assert real_saturation(a)[2].jacobian_unscaled != pytest.approx(real_saturation(b)[2].jacobian_unscaled, rel=1e-3)
    assert real_sharpness(a)[3].top1 != pytest.approx(real_sharpness(b)[3].top1, rel=1e-3)
    assert real_decoupling(a)[0][4].spearman != pytest.approx(real_decoupling(b)[0][4].spearman, rel=1e-3)
    essay, control = corpus_traces[ESSAY_SENTENCE], corpus_traces[CONTROL_SENTENCE]
    assert coreference(essay, control).best != coreference(control, essay).best


def test_real_variance_and_sharpness_match_transformers(minilm, hf_bert):
    """Q, K recomputed by transformers' own layers from its hidden states, and its attention weights."""
    text = CORPUS[4]
    t = qkv.trace(text, model=minilm)
    ids = torch.tensor([minilm.tokenizer.encode(text).ids])
    with torch.no_grad():
        out = hf_bert(ids, output_attentions=True, output_hidden_states=True)
        var_raw, top1 = [], []
        for n, layer in enumerate(hf_bert.encoder.layer):
            h = out.hidden_states[n][0]  # (L, 384)
            q = layer.attention.self.query(h).view(-1, 12, 32).transpose(0, 1)  # (H, L, D)
            k = layer.attention.self.key(h).view(-1, 12, 32).transpose(0, 1)
            var_raw.append(float((q @ k.transpose(-1, -2)).double().var()))
            top1.append(float(out.attentions[n][0].max(-1).values.double().mean()))
    assert [r.var_raw for r in real_variance([t])] == pytest.approx(var_raw, rel=1e-4)
    assert [r.var_scaled for r in real_variance([t])] == pytest.approx([v / 32 for v in var_raw], rel=1e-4)
    assert [r.top1 for r in real_sharpness([t])] == pytest.approx(top1, abs=1e-5)
    assert [r.uniform1 for r in real_sharpness([t])] == pytest.approx([1 / len(t)] * 6)


def test_real_saturation_recomputed_from_the_trace(corpus_traces):
    t = corpus_traces[CORPUS[2]]
    rows = real_saturation([t])
    for n in (0, 5):
        p = torch.softmax(t.scores[n].double(), -1)  # (H, L, L): without the scale
        assert rows[n].max_unscaled == pytest.approx(float(p.max(-1).values.mean()), rel=1e-6)
        assert rows[n].max_scaled == pytest.approx(float(t.weights[n].double().max(-1).values.mean()), rel=1e-6)
        jac = torch.autograd.functional.jacobian(lambda s: torch.softmax(s, -1), t.scaled[n, 3, 1].double())
        assert float(softmax_jacobian_norm(t.weights[n, 3, 1])) == pytest.approx(float(jac.norm()), rel=1e-4)


def test_real_decoupling_recomputed_independently(corpus_traces):
    stats = pytest.importorskip("scipy.stats")
    traces = [corpus_traces[CORPUS[2]], corpus_traces[CORPUS[3]]]
    rows, example = real_decoupling(traces)
    kc, vc = [], []
    for t in traces:
        idx = [j for j in range(len(t)) if not t.special[j]]
        for a in range(len(idx)):
            for b in range(a + 1, len(idx)):
                kc.append(torch.nn.functional.cosine_similarity(t.k[2, :, idx[a]], t.k[2, :, idx[b]], dim=-1))
                vc.append(torch.nn.functional.cosine_similarity(t.v[2, :, idx[a]], t.v[2, :, idx[b]], dim=-1))
    kc, vc = torch.stack(kc).numpy(), torch.stack(vc).numpy()  # (P, H)
    assert rows[2].pairs == len(kc)
    rho = [stats.spearmanr(kc[:, h], vc[:, h]).statistic for h in range(kc.shape[1])]
    assert rows[2].spearman == pytest.approx(float(np.mean(rho)), abs=1e-5)
    assert rows[2].spearman_min == pytest.approx(min(rho), abs=1e-5)
    t = next(t for t in traces if t.text == example.sentence)
    i, j = example.first_index, example.second_index
    assert (t.tokens[i], t.tokens[j]) == (example.first, example.second)
    cos = torch.nn.functional.cosine_similarity
    assert example.key_cos == pytest.approx(
        float(cos(t.k[example.layer, example.head, i], t.k[example.layer, example.head, j], dim=0)), abs=1e-5
    )
    assert example.value_cos == pytest.approx(
        float(cos(t.v[example.layer, example.head, i], t.v[example.layer, example.head, j], dim=0)), abs=1e-5
    )


def test_coreference_reads_the_attention_rows(corpus_traces):
    essay, control = corpus_traces[ESSAY_SENTENCE], corpus_traces[CONTROL_SENTENCE]
    c = coreference(essay, control)
    it, cat, mat = (essay.tokens.index(w) for w in ("it", "cat", "mat"))
    margins = essay.weights[:, :, it, cat] - essay.weights[:, :, it, mat]  # (N, H)
    control_margins = control.weights[:, :, it, cat] - control.weights[:, :, it, mat]
    layer, head, margin, ctrl = c.best[0]
    assert (layer, head) == divmod(int(margins.argmax()), essay.num_heads)
    assert margin == pytest.approx(float(margins.max())) and ctrl == pytest.approx(float(control_margins[layer, head]))
    assert c.mean_margin == pytest.approx(float(margins.mean()), abs=1e-6)
    assert c.referent_heads == int(((margins >= 0.05) & (control_margins <= -0.05)).sum())
    assert c.heads == 72


# ------------------------------------------------------------------------------------------ the report
@pytest.fixture(scope="module")
def small_report(minilm, tmp_path_factory):
    messages = []
    plots = tmp_path_factory.mktemp("plots")
    report = evaluate(minilm, sentences=CORPUS[2:7], dims=(4, 32, 256), synthetic_rows=256, progress=messages.append)
    save_figures(report, plots)
    return report, messages, plots


def test_report_verdicts_follow_their_own_numbers(small_report):
    report, messages, _ = small_report
    assert [c.key for c in report.claims] == ["variance", "saturation", "sharpening", "decoupling", "coreference"]
    assert all(c.verdict in VERDICTS and c.reason and c.summary for c in report.claims)
    th = report.thresholds
    d = report.claim("variance").data
    assert report.variance_slope == d["synthetic"]["slope"]
    assert (
        report.claim(1).verdict
        == variance_verdict(
            d["synthetic"]["slope"], d["synthetic"]["var_scaled"], [r["var_scaled"] for r in d["real"]], th
        ).verdict
    )
    d = report.claim("sharpening").data["real"]
    assert report.claim(3).verdict == sharpening_verdict([r["top1"] for r in d], [r["uniform1"] for r in d], th).verdict
    d = report.claim("decoupling").data
    assert (
        report.claim(4).verdict
        == decoupling_verdict(
            [r["spearman"] for r in d["real"]], d["example"]["key_cos"], d["example"]["value_cos"], th
        ).verdict
    )
    d = report.claim("coreference").data
    ho, base = d["probe"]["heldout"], {k: b["accuracy"] for k, b in d["probe"]["baselines"].items()}
    assert report.claim(5).verdict == probe_verdict(ho["accuracy"], ho["ci_low"], ho["ci_high"], base).verdict
    assert d["probe"]["items"]["used"] >= 80 and set(base) == {"first", "nearest", "random"}
    assert (
        d["sentence_verdict"]
        == coreference_verdict(
            d["sentence"]["best"][0]["margin"], d["sentence"]["best"][0]["control_margin"], th
        ).verdict
    )
    assert report.sentences == tuple(CORPUS[2:7]) and len(report.rows) == 5
    assert any("tracing" in m for m in messages) and any("claim 5" in m for m in messages)
    for n in (4, 5):  # what swapping the twin candidates' K and V does (qkv.claims.causal)
        assert report.claim(n).data["causal"]["items"] >= 80 and "Causally" in report.claim(n).summary


def test_report_json_and_markdown(small_report):
    report, _, plots = small_report
    doc = json.loads(report.to_json())
    assert doc["schema"] == "qkv.claims" and doc["variance_slope"] == report.variance_slope
    assert [c["number"] for c in doc["claims"]] == [1, 2, 3, 4, 5]
    assert doc["thresholds"]["margin"] == 0.05
    md = markdown_table(report, summaries=False)
    assert md.count("\n") == 7 and "| verdict |" in md
    assert all((plots / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for name in FIGURES)


def test_bad_input_is_refused(small_report, tmp_path):
    with pytest.raises(ValueError, match="non-empty"):
        evaluate("minilm", sentences=[])
    with pytest.raises(ValueError, match="threads"):
        evaluate("minilm", threads=0)
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="directory"):
        save_figures(small_report[0], tmp_path / "f")
    with pytest.raises(KeyError, match="no claim"):
        small_report[0].claim("gravity")


def test_threads_are_restored(small_report, minilm):
    before = torch.get_num_threads()
    evaluate(minilm, sentences=CORPUS[:2], dims=(4, 8), synthetic_rows=64, threads=1, causal=False)
    assert torch.get_num_threads() == before


# ------------------------------------------------------------------------------------------ the command
def test_cli_claims_end_to_end(tmp_path):
    script = Path(sys.executable).with_name("qkv")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "qkv.cli"]
    env = {**os.environ, "COLUMNS": "160", "NO_COLOR": "1"}
    out = subprocess.run(
        [*cmd, "claims", "--json", "out.json", "--plots", "figs"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    assert "The essay's claims, measured on" in out.stdout
    doc = json.loads((tmp_path / "out.json").read_text())
    assert abs(doc["variance_slope"] - 1) < 0.05
    assert [c["key"] for c in doc["claims"]] == ["variance", "saturation", "sharpening", "decoupling", "coreference"]
    assert all(c["verdict"] in VERDICTS for c in doc["claims"])
    assert len(doc["sentences"]) == len(CORPUS)
    for name in FIGURES:
        assert (tmp_path / "figs" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_coreference_summary_says_its_margin_so_compare_does_not_contradict_it(small_report):
    """ "0 heads ... switch" here and "L3 H1 flips" in qkv compare: the summary says a switch needs the margin."""
    report, _, _ = small_report
    c = report.claim("coreference")
    tau = c.data["tau"] if isinstance(c.data, dict) and "tau" in c.data else 0.05
    assert f"by >= {tau} on the control" in c.summary
    assert f"a margin under {tau} counts as no preference" in c.summary and "qkv compare" in c.summary
