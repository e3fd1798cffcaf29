"""``evaluate``: measure the essay's five claims on a model and grade each from its numbers.

The report keeps, per claim, what was measured, the headline figure, the verdict with its reason, a
plain-language summary and every number behind it (``data``, plain JSON), so the verdict table, the
figures and ``--json`` all come from the same object.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import torch

from ..lens.loading import load_model
from ..lens.probing import probe
from ..lens.trace import Trace
from ..lens.tracing import trace
from .causal import swap_effects
from .real import (
    CONTROL_SENTENCE,
    CORPUS,
    ESSAY_SENTENCE,
    coreference,
    real_decoupling,
    real_saturation,
    real_sharpness,
    real_variance,
)
from .synthetic import DIMS, SyntheticResult, synthetic_scores
from .verdicts import (
    FAILS,
    HOLDS,
    Thresholds,
    coreference_verdict,
    decoupling_verdict,
    probe_verdict,
    saturation_verdict,
    sharpening_verdict,
    variance_verdict,
)

__all__ = ["ClaimResult", "ClaimsReport", "evaluate", "SCHEMA_VERSION"]

SCHEMA_VERSION = 1
Progress = Callable[[str], None]


@dataclass(frozen=True)
class ClaimResult:
    """One claim: ``number``/``key``, the ``claim`` itself, what was ``measured``, the headline ``figure``,
    the ``verdict`` and its ``reason``, a plain ``summary`` and the numbers behind it (``data``)."""

    number: int
    key: str
    claim: str
    measured: str
    figure: str
    verdict: str
    reason: str
    summary: str
    data: dict = field(repr=False)


@dataclass(frozen=True)
class ClaimsReport:
    """The five claims measured on ``model`` (see :func:`evaluate`)."""

    model: str
    claims: tuple[ClaimResult, ...]
    variance_slope: float
    thresholds: Thresholds
    sentences: tuple[str, ...]
    seconds: float

    @property
    def rows(self) -> list[tuple[str, str, str, str]]:
        """``(claim, what was measured, figure, verdict)`` per claim, for a table."""
        return [(f"{c.number}. {c.claim}", c.measured, c.figure, c.verdict) for c in self.claims]

    @property
    def verdicts(self) -> dict[str, str]:
        """``{claim key: verdict}``."""
        return {c.key: c.verdict for c in self.claims}

    def claim(self, key: str | int) -> ClaimResult:
        """A claim by key (``"variance"``) or number (1-5)."""
        for c in self.claims:
            if key in (c.key, c.number):
                return c
        raise KeyError(f"no claim {key!r}; claims are {[c.key for c in self.claims]} (or 1-{len(self.claims)})")

    def to_dict(self) -> dict:
        """Plain JSON data: ``schema``, ``model``, ``variance_slope``, ``seconds``, ``thresholds``,
        ``sentences`` and ``claims`` (one dict per :class:`ClaimResult`)."""
        return {
            "schema": "qkv.claims",
            "version": SCHEMA_VERSION,
            "model": self.model,
            "variance_slope": self.variance_slope,
            "seconds": round(self.seconds, 2),
            "thresholds": self.thresholds.to_dict(),
            "sentences": list(self.sentences),
            "claims": [asdict(c) for c in self.claims],
        }

    def to_json(self, indent: int | None = 2) -> str:
        """:meth:`to_dict` as a JSON string."""
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)


def _span(values: Sequence[float], fmt: str = ".2f") -> str:
    lo, hi = min(values), max(values)
    return f"{lo:{fmt}}" if f"{lo:{fmt}}" == f"{hi:{fmt}}" else f"{lo:{fmt}}..{hi:{fmt}}"


def _claim_variance(syn: SyntheticResult, real: list, th: Thresholds, name: str) -> ClaimResult:
    v = variance_verdict(syn.slope, [r.var_scaled for r in syn.rows], [r.var_scaled for r in real], th)
    d_k = real[0].d_k
    figure = (
        f"synthetic slope {syn.slope:.3f} (closed form 1), scaled var {_span([r.var_scaled for r in syn.rows])}; "
        f"{name} d_k={d_k}: scaled var {_span([r.var_scaled for r in real], '.1f')} per layer "
        f"(var q {_span([r.var_q for r in real], '.1f')}, var k {_span([r.var_k for r in real], '.1f')})"
    )
    lo, hi = 1 / th.real_band, th.real_band
    far = [r for r in real if not lo <= r.var_scaled <= hi]
    summary = (
        f"For unit-normal q, k the variance of q.k is d_k (fitted slope {syn.slope:.3f}) and 1/sqrt(d_k) brings "
        f"it to {_span([r.var_scaled for r in syn.rows])}. In {name} the components of q and k have variance "
        f"{_span([r.var_q for r in real] + [r.var_k for r in real], '.1f')} and the scaled scores have variance "
        f"{_span([r.var_scaled for r in real], '.1f')} per layer."
    )
    if far:
        worst = max(far, key=lambda r: abs(math.log(r.var_scaled)))
        summary += (
            f" {len(far)} of {len(real)} layers fall outside [{lo:.2f}, {hi:.2f}] (layer {worst.layer}: "
            f"{worst.var_scaled:.1f}, one head {worst.max_head_scaled:.1f}), far from the "
            f"{worst.predicted_scaled:.1f} that independent, zero-mean, equal-variance components would "
            f"give. Drawing a query and a key independently from the measured means and covariances predicts "
            f"{_span([r.predicted_independent for r in real], '.1f')}"
        )
        if all(abs(r.predicted_independent / r.var_scaled - 1) <= 0.25 for r in far):
            summary += (
                ": the excess comes from the shape of the q and k distributions (variance concentrated in "
                "shared directions, mean offsets), which the scale's derivation assumes away."
            )
        else:
            summary += ": the rest comes from which query meets which key (learned alignment)."
    data = {
        "synthetic": {
            "d_k": [r.d_k for r in syn.rows],
            "var_raw": [r.var_raw for r in syn.rows],
            "var_scaled": [r.var_scaled for r in syn.rows],
            "slope": syn.slope,
            "intercept": syn.intercept,
            "rows": syn.n_rows,
            "keys": syn.n_keys,
            "seed": syn.seed,
        },
        "real": [asdict(r) for r in real],
    }
    return ClaimResult(
        1,
        "variance",
        "q.k variance grows with d_k; 1/sqrt(d_k) brings it to ~1",
        f"unit-normal q, k at d_k = {syn.rows[0].d_k}..{syn.rows[-1].d_k} (log-log fit); "
        f"per layer var of q.k and q.k/sqrt(d_k) on {name}'s own Q, K",
        figure,
        v.verdict,
        v.reason,
        summary,
        data,
    )


def _claim_saturation(syn: SyntheticResult, real: list, th: Thresholds, name: str) -> ClaimResult:
    top = syn.rows[-1]
    ratio = top.jacobian_unscaled / top.jacobian_scaled
    v = saturation_verdict(
        top.max_unscaled,
        ratio,
        [r.jacobian_scaled for r in syn.rows],
        [r.jacobian_ratio for r in real],
        [r.max_unscaled - r.max_scaled for r in real],
        th,
    )
    figure = (
        f"synthetic d_k={top.d_k}: max-weight {top.max_unscaled:.2f} unscaled vs {top.max_scaled:.2f} scaled, "
        f"|J| ratio {ratio:.2f}; {name}: max-weight {_span([r.max_scaled for r in real])} -> "
        f"{_span([r.max_unscaled for r in real])} unscaled, |J| ratio {_span([r.jacobian_ratio for r in real])}"
    )
    summary = (
        f"Without the scale, {name}'s own scores would push the mean top weight from "
        f"{_span([r.max_scaled for r in real])} to {_span([r.max_unscaled for r in real])} and the entropy from "
        f"{_span([r.entropy_scaled for r in real])} to {_span([r.entropy_unscaled for r in real])} nats; the "
        f"softmax Jacobian norm (what passes the gradient back to the scores) would be multiplied by "
        f"{_span([r.jacobian_ratio for r in real])}."
    )
    data = {
        "synthetic": {
            k: [getattr(r, k) for r in syn.rows]
            for k in (
                "d_k",
                "max_unscaled",
                "max_scaled",
                "entropy_unscaled",
                "entropy_scaled",
                "jacobian_unscaled",
                "jacobian_scaled",
            )
        }
        | {"keys": syn.n_keys},
        "real": [asdict(r) | {"jacobian_ratio": r.jacobian_ratio} for r in real],
    }
    return ClaimResult(
        2,
        "saturation",
        "unscaled scores saturate softmax and shrink gradients",
        f"softmax of the same scores with and without 1/sqrt(d_k): mean max-weight, entropy, "
        f"|diag(p) - p p^T|_F (synthetic rows of {syn.n_keys} keys; {name}, every query row)",
        figure,
        v.verdict,
        v.reason,
        summary,
        data,
    )


def _claim_sharpening(real: list, th: Thresholds, name: str) -> ClaimResult:
    v = sharpening_verdict([r.top1 for r in real], [r.uniform1 for r in real], th)
    figure = (
        f"top-1 mass {_span([r.top1 for r in real])} vs uniform {_span([r.uniform1 for r in real], '.3f')} "
        f"({_span([r.sharpness for r in real], '.1f')}x), top-3 {_span([r.top3 for r in real])}; "
        f"top key is [CLS]/[SEP] in {_span([r.top1_special * 100 for r in real], '.0f')}% of rows"
    )
    summary = (
        f"The heaviest key takes {_span([r.top1 for r in real])} of a row's mass per layer, "
        f"{_span([r.sharpness for r in real], '.1f')} times a uniform row; normalising the same scores "
        f"linearly instead of exponentially would give it {_span([r.top1_linear for r in real])}."
    )
    special = max(r.top1_special for r in real)
    if special >= 0.5:
        summary += (
            f" Much of that peak sits on special tokens: [CLS]/[SEP] are the top key in "
            f"{_span([r.top1_special * 100 for r in real], '.0f')}% of rows."
        )
    data = {"real": [asdict(r) | {"sharpness": r.sharpness} for r in real]}
    return ClaimResult(
        3,
        "sharpening",
        "softmax sharpens: high scores win",
        f"per layer of {name}: mass of the top-1 / top-3 keys vs a uniform row (1/n, 3/n) and "
        f"vs a linear normalisation of the same scores",
        figure,
        v.verdict,
        v.reason,
        summary,
        data,
    )


def _claim_decoupling(real: list, example, th: Thresholds, name: str, causal=None) -> ClaimResult:
    v = decoupling_verdict([r.spearman for r in real], example.key_cos, example.value_cos, th)
    pair = f"L{example.layer}H{example.head} '{example.first}'/'{example.second}'"
    figure = (
        f"Spearman rho {_span([r.spearman for r in real])} per layer "
        f"(Pearson {_span([r.pearson for r in real])}); {pair}: key cos {example.key_cos:.2f}, "
        f"value cos {example.value_cos:.2f}"
    )
    rho = _span([r.spearman for r in real])
    if v.verdict == HOLDS:
        how = f"key similarity says little about value similarity (rho {rho}): K and V are decoupled."
    elif v.verdict == FAILS:
        how = f"tokens with similar keys have similar values (rho {rho}): K and V move together."
    else:
        how = (
            f"tokens whose keys are similar tend to have similar values too (rho {rho}): K and V are projections "
            f"of the same hidden state, so they are only partly decoupled."
        )
    summary = (
        f"Over {real[0].pairs} same-sentence token pairs, {how} In layer {example.layer} head {example.head}, "
        f"'{example.first}' and '{example.second}' ({example.sentence!r}) have keys with cosine "
        f"{example.key_cos:.2f} and values with cosine {example.value_cos:.2f}."
    )
    data = {"real": [asdict(r) for r in real], "example": asdict(example)}
    if causal is not None:  # what swapping V of the twin candidates does (qkv.claims.causal)
        summary = f"{summary} {causal.sentence('decoupling')}"
        data["causal"] = causal.figures()
    return ClaimResult(
        4,
        "decoupling",
        "K and V are decoupled",
        f"per layer and head of {name}: correlation over same-sentence token pairs of key cosine vs "
        f"value cosine similarity; the pair with close keys and the most different values",
        figure,
        v.verdict,
        v.reason,
        summary,
        data,
    )


def _claim_coreference(c, p, th: Thresholds, name: str, causal=None) -> ClaimResult:
    """Claim 5: the verdict from the probe ``p`` on the twin pairs; the essay's sentence ``c`` alongside."""
    layer, head, margin, control = c.best[0]
    one = coreference_verdict(margin, control, th)
    s, base = p.heldout.score, {k: b["accuracy"] for k, b in p.baselines.items()}
    v = probe_verdict(s.accuracy, s.ci_low, s.ci_high, base)
    bl, bh, best = p.ranked()[0]
    figure = (
        f"held-out best head {s.accuracy:.0%} [{s.ci_low:.0%}, {s.ci_high:.0%}] over {s.n} twin items; "
        f"baselines first {base['first']:.0%}, nearest {base['nearest']:.0%}, random {base['random']:.0%}; "
        f"best of {len(p.heads)} on the same items L{bl}H{bh} {best.accuracy:.0%} (permutation p "
        f"{p.null_p:.3f}); essay sentence: L{layer}H{head} {c.referent} - {c.other} = {margin:+.2f}, "
        f"control {control:+.2f} ({one.verdict})"
    )
    q, ref, other = f"'{c.query}'", f"'{c.referent}'", f"'{c.other}'"
    if control <= -th.margin:
        follows = f"and on the control it switches to {other}: it follows the referent"
    elif control >= th.margin:
        follows = (
            f"but on the control sentence, where {q} is {other}, it still prefers {ref}: it follows the first "
            f"noun (or position), not the referent"
        )
    else:
        follows = f"and on the control sentence its preference vanishes without switching to {other}"
    summary = (
        f"In {name}, head L{layer}H{head} has {q} attend to {ref} {margin:+.2f} more than to {other} {follows} "
        f"(control margin {control:+.2f}). Averaged over all {c.heads} heads {q} gives {ref} "
        f"{c.mean_referent_weight:.3f} and {other} {c.mean_other_weight:.3f} (margin {c.mean_margin:+.3f}; "
        f"control {c.mean_control_margin:+.3f}). {c.referent_heads} heads prefer {ref} by >= {c.tau} and switch "
        f"to {other} by >= {c.tau} on the control; {c.first_noun_heads} prefer {ref} in both (a margin under "
        f"{c.tau} counts as no preference, so smaller sign changes -- the flips qkv compare lists -- are not "
        "counted here)."
    )
    summary = (
        f"Over {s.n} pronoun sentences in {p.twins.pairs} twin pairs (one word flips the referent), "
        f"the head chosen on one half of the pairs picks the referent {s.accuracy:.0%} of the time on the "
        f"other half ({s.ci_low:.0%}-{s.ci_high:.0%}), against {base['first']:.0%} for the first-mentioned "
        f"noun: {p.verdict}. On the essay's sentence alone: {summary}"
    )
    data = {"probe": p.to_dict(), "sentence": c.to_dict(), "sentence_verdict": one.verdict}
    if causal is not None:  # what swapping K of the twin candidates does (qkv.claims.causal)
        summary = f"{summary} {causal.sentence('coreference')}"
        data["causal"] = causal.figures()
    return ClaimResult(
        5,
        "coreference",
        f"'{c.query}' attends to its referent ('{c.referent}' in the essay)",
        f"qkv probe on {p.source.rsplit('/', 1)[-1]} ({s.n} items, every head of {name}): held-out best "
        f"head vs first/nearest/random baselines; plus weight({c.query}->{c.referent}) - "
        f"weight({c.query}->{c.other}) on {c.sentence!r} and its control",
        figure,
        v.verdict,
        v.reason,
        summary,
        data,
    )


def evaluate(
    model: Any = "minilm",
    *,
    progress: Progress | None = None,
    sentences: Sequence[str] = CORPUS,
    thresholds: Thresholds = Thresholds(),
    seed: int = 0,
    dims: Sequence[int] = DIMS,
    synthetic_rows: int = 2048,
    threads: int | None = 1,
    causal: bool = True,
) -> ClaimsReport:
    """Measure the essay's five claims on ``model`` and grade each from its numbers.

    Args:
        model: a name/path for :func:`qkv.models.load` (default the embedded MiniLM) or a loaded model.
        progress: called with a short message before each stage (e.g. a rich status's ``update``).
        sentences: the corpus for claims 1-4 (the essay's sentence and its control are traced for claim 5
            either way; claim 5's verdict comes from ``qkv.lens.probe`` on the shipped twin pairs).
        thresholds: the verdict thresholds (:class:`Thresholds`).
        seed: seed of the synthetic draw.
        dims: the synthetic ``d_k`` values.
        synthetic_rows: synthetic queries per ``d_k``.
        causal: also swap K and V of the twin candidates (claims 4 and 5, :mod:`qkv.claims.causal`).
        threads: torch intra-op threads while measuring (restored afterwards); the tensors are small, so
            one thread is fastest and does not fight other processes for cores. ``None`` leaves torch as is.

    Returns:
        A :class:`ClaimsReport`.
    """
    sentences = tuple(sentences)
    if not sentences or not all(isinstance(s, str) and s.strip() for s in sentences):
        raise ValueError("sentences must be a non-empty list of non-empty strings")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1 or None, got {threads}")
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _evaluate(
            model, progress or (lambda message: None), sentences, thresholds, seed, dims, synthetic_rows, causal
        )
    finally:
        torch.set_num_threads(before)


def _evaluate(
    model: Any,
    say: Progress,
    sentences: tuple[str, ...],
    thresholds: Thresholds,
    seed: int,
    dims: Sequence[int],
    synthetic_rows: int,
    causal: bool = True,
) -> ClaimsReport:
    start = time.perf_counter()
    say("synthetic: unit-normal q, k for every d_k")
    syn = synthetic_scores(dims=dims, rows=synthetic_rows, seed=seed)
    say(f"loading {model if isinstance(model, str) else type(model).__name__}")
    m = load_model(model)
    traces: dict[str, Trace] = {}
    texts = list(dict.fromkeys([*sentences, ESSAY_SENTENCE, CONTROL_SENTENCE]))
    for i, text in enumerate(texts, 1):
        say(f"tracing {i}/{len(texts)}: {text[:40]}")
        traces[text] = trace(text, m)
    corpus = [traces[s] for s in sentences]
    name = corpus[0].model["name"]
    say("measuring claims 1-3: variance, saturation, sharpening")
    claims = [
        _claim_variance(syn, real_variance(corpus), thresholds, name),
        _claim_saturation(syn, real_saturation(corpus), thresholds, name),
        _claim_sharpening(real_sharpness(corpus), thresholds, name),
    ]
    swaps = None
    if causal:
        say("claims 4 and 5 causally: swapping K and V of the twin candidates")
        swaps = swap_effects(m, seed=seed)
    say("measuring claim 4: key vs value similarity")
    layers, example = real_decoupling(corpus, thresholds.close_key_cos)
    claims.append(_claim_decoupling(layers, example, thresholds, name, swaps))
    say("measuring claim 5: 'it' -> 'cat' and its control")
    coref = coreference(traces[ESSAY_SENTENCE], traces[CONTROL_SENTENCE], tau=thresholds.margin)
    say("measuring claim 5: qkv probe on the shipped twin pairs")
    claims.append(_claim_coreference(coref, probe("twins", m, seed=seed), thresholds, name, swaps))
    return ClaimsReport(name, tuple(claims), syn.slope, thresholds, sentences, time.perf_counter() - start)
