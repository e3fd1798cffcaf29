"""Verdicts from numbers: every threshold is named in :class:`Thresholds` and written into the report.

A verdict is ``holds``, ``partly`` or ``does not hold``, with the reason (the numbers against the
thresholds). Nothing here knows which model or data produced the numbers, so the tests feed values on
both sides of each threshold and watch the verdict flip.

Rules (``majority`` of layers = at least ``layer_majority`` of them):

1. *variance* -- synthetic part: ``|slope - 1| <= slope_tolerance`` and every synthetic scaled
   variance in ``[1/synthetic_band, synthetic_band]``; real part: a majority of layers with scaled
   variance in ``[1/real_band, real_band]``. Both -> holds, one -> partly, none -> does not hold.
2. *saturation* -- synthetic part, at the largest ``d_k``: unscaled mean max-weight
   ``>= saturated_max_weight``, Jacobian-norm ratio unscaled/scaled ``<= gradient_ratio``, and the scaled
   Jacobian norm within ``flat_spread`` (relative) across all ``d_k``; real part: a majority of layers
   with ratio ``<= gradient_ratio`` and unscaled max-weight ``>=`` scaled ``+ saturation_gain``.
   Both -> holds, one -> partly, none -> does not hold.
3. *sharpening* -- a layer is sharp when its mean top-1 mass ``>= sharp_factor`` x a uniform row's
   ``1/n``. Majority -> holds, some -> partly, none -> does not hold.
4. *decoupling* -- per layer the Spearman correlation of key and value cosine similarity: decoupled if
   ``|rho| < decoupled_corr``, coupled if ``|rho| >= coupled_corr``; the example pair counts if its key
   cosine ``>= close_key_cos`` and value cosine ``<= different_value_cos``. A majority coupled -> does
   not hold; a majority decoupled and the example -> holds; otherwise partly.
5. *coreference* -- judged by ``qkv probe`` on the shipped twin pairs (:func:`probe_verdict`): the held-out
   best head's exact 95 % interval lies above every baseline (first-mentioned, nearest, random) -> holds;
   above chance but not above every baseline -> partly; otherwise -> does not hold.
   (:func:`coreference_verdict` grades the single sentence and its control -- the best head's margin
   ``weight(cat) - weight(mat) >= margin`` and ``<= -margin`` on the control -- reported alongside.)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple, Sequence

__all__ = [
    "HOLDS",
    "PARTLY",
    "FAILS",
    "VERDICTS",
    "Thresholds",
    "Verdict",
    "variance_verdict",
    "saturation_verdict",
    "sharpening_verdict",
    "decoupling_verdict",
    "coreference_verdict",
    "probe_verdict",
]

HOLDS, PARTLY, FAILS = "holds", "partly", "does not hold"
VERDICTS = (HOLDS, PARTLY, FAILS)


@dataclass(frozen=True)
class Thresholds:
    """The documented thresholds (see the module docstring for how each verdict uses them)."""

    slope_tolerance: float = 0.1  #: |log-log slope - 1| allowed for "variance grows in proportion to d_k"
    synthetic_band: float = 1.25  #: synthetic scaled variance within [1/1.25, 1.25] counts as "= 1"
    real_band: float = 2.0  #: a real layer's scaled variance within [1/2, 2] counts as "near 1"
    layer_majority: float = 2 / 3  #: share of layers that makes "most layers"
    saturated_max_weight: float = 0.9  #: synthetic unscaled mean max-weight that counts as saturated
    gradient_ratio: float = 0.5  #: unscaled/scaled softmax-Jacobian norm at most this: the gradient halves
    flat_spread: float = 0.1  #: relative spread of the synthetic scaled Jacobian norm across d_k
    saturation_gain: float = 0.1  #: real: unscaled mean max-weight at least this above the scaled one
    sharp_factor: float = 3.0  #: top-1 mass at least this many times the uniform 1/n
    decoupled_corr: float = 0.3  #: |Spearman| below this: keys and values decoupled in that layer
    coupled_corr: float = 0.7  #: |Spearman| at least this: coupled in that layer
    close_key_cos: float = 0.8  #: keys this close (cosine) count as "match alike"
    different_value_cos: float = 0.3  #: values at most this similar (cosine) count as "differ"
    margin: float = 0.05  #: attention-weight difference that counts as a preference

    def to_dict(self) -> dict:
        return asdict(self)


class Verdict(NamedTuple):
    """``verdict`` (one of :data:`VERDICTS`) and the ``reason`` in numbers."""

    verdict: str
    reason: str


def _majority(flags: Sequence[bool], th: Thresholds) -> bool:
    return bool(flags) and sum(flags) / len(flags) >= th.layer_majority - 1e-12


def _grade(parts: int, total: int = 2) -> str:
    return HOLDS if parts == total else (PARTLY if parts else FAILS)


def variance_verdict(
    slope: float, synthetic_scaled: Sequence[float], real_scaled: Sequence[float], th: Thresholds = Thresholds()
) -> Verdict:
    """Claim 1 from the synthetic slope, synthetic scaled variances and per-layer real scaled variances."""
    lo, hi = 1 / th.synthetic_band, th.synthetic_band
    synthetic = abs(slope - 1.0) <= th.slope_tolerance and all(lo <= v <= hi for v in synthetic_scaled)
    near = [1 / th.real_band <= v <= th.real_band for v in real_scaled]
    real = _majority(near, th)
    reason = (
        f"synthetic: slope {slope:.3f} ({'within' if abs(slope - 1) <= th.slope_tolerance else 'outside'} "
        f"1 +/- {th.slope_tolerance}), scaled variance {min(synthetic_scaled):.2f}-{max(synthetic_scaled):.2f} "
        f"({'within' if synthetic else 'not all within'} [{lo:.2f}, {hi:.2f}]); real: {sum(near)}/{len(near)} "
        f"layers with scaled variance in [{1 / th.real_band:.2f}, {th.real_band:.2f}] "
        f"({'a' if real else 'not a'} majority)"
    )
    return Verdict(_grade(int(synthetic) + int(real)), reason)


def saturation_verdict(
    max_unscaled_at_largest: float,
    ratio_at_largest: float,
    scaled_jacobians: Sequence[float],
    real_ratios: Sequence[float],
    real_max_gains: Sequence[float],
    th: Thresholds = Thresholds(),
) -> Verdict:
    """Claim 2. ``real_max_gains``: per layer, unscaled minus scaled mean max-weight."""
    spread = (max(scaled_jacobians) - min(scaled_jacobians)) / max(max(scaled_jacobians), 1e-12)
    synthetic = (
        max_unscaled_at_largest >= th.saturated_max_weight
        and ratio_at_largest <= th.gradient_ratio
        and spread <= th.flat_spread
    )
    ok = [r <= th.gradient_ratio and g >= th.saturation_gain for r, g in zip(real_ratios, real_max_gains)]
    real = _majority(ok, th)
    reason = (
        f"synthetic at the largest d_k: unscaled max-weight {max_unscaled_at_largest:.2f} "
        f"(saturated if >= {th.saturated_max_weight}), Jacobian ratio {ratio_at_largest:.2f} "
        f"(<= {th.gradient_ratio}), scaled Jacobian spread {spread:.0%} (<= {th.flat_spread:.0%}) -> "
        f"{'yes' if synthetic else 'no'}; real: {sum(ok)}/{len(ok)} layers with ratio <= {th.gradient_ratio} "
        f"and max-weight gain >= {th.saturation_gain} ({'a' if real else 'not a'} majority)"
    )
    return Verdict(_grade(int(synthetic) + int(real)), reason)


def sharpening_verdict(top1: Sequence[float], uniform1: Sequence[float], th: Thresholds = Thresholds()) -> Verdict:
    """Claim 3 from per-layer mean top-1 mass and the uniform baseline ``1/n``."""
    sharp = [t >= th.sharp_factor * u for t, u in zip(top1, uniform1)]
    verdict = HOLDS if _majority(sharp, th) else (PARTLY if any(sharp) else FAILS)
    ratios = [t / u for t, u in zip(top1, uniform1)]
    reason = (
        f"{sum(sharp)}/{len(sharp)} layers with top-1 mass >= {th.sharp_factor}x uniform "
        f"(ratios {min(ratios):.1f}-{max(ratios):.1f}x)"
    )
    return Verdict(verdict, reason)


def decoupling_verdict(
    spearman: Sequence[float], example_key_cos: float, example_value_cos: float, th: Thresholds = Thresholds()
) -> Verdict:
    """Claim 4 from per-layer Spearman correlations and the example pair's key/value cosines."""
    decoupled = [abs(r) < th.decoupled_corr for r in spearman]
    coupled = [abs(r) >= th.coupled_corr for r in spearman]
    example = example_key_cos >= th.close_key_cos and example_value_cos <= th.different_value_cos
    if _majority(coupled, th):
        verdict = FAILS
    elif _majority(decoupled, th) and example:
        verdict = HOLDS
    else:
        verdict = PARTLY
    reason = (
        f"{sum(decoupled)}/{len(spearman)} layers decoupled (|rho| < {th.decoupled_corr}), "
        f"{sum(coupled)} coupled (|rho| >= {th.coupled_corr}); example pair key cos {example_key_cos:.2f} "
        f"(>= {th.close_key_cos}?) value cos {example_value_cos:.2f} (<= {th.different_value_cos}?) -> "
        f"{'counts' if example else 'does not count'}"
    )
    return Verdict(verdict, reason)


def coreference_verdict(best_margin: float, best_control_margin: float, th: Thresholds = Thresholds()) -> Verdict:
    """Claim 5 from the best head's margin on the sentence and the same head's margin on the control."""
    prefers = best_margin >= th.margin
    follows = best_control_margin <= -th.margin
    verdict = HOLDS if prefers and follows else (PARTLY if prefers else FAILS)
    reason = (
        f"best head margin {best_margin:+.3f} ({'>=' if prefers else '<'} {th.margin}); on the control it is "
        f"{best_control_margin:+.3f} ({'flips: follows the referent' if follows else 'does not flip'})"
    )
    return Verdict(verdict, reason)


def probe_verdict(heldout: float, ci_low: float, ci_high: float, baselines: dict[str, float]) -> Verdict:
    """Claim 5 from the probe: the held-out accuracy, its exact interval and the baselines' accuracies."""
    uncleared = [k for k, v in baselines.items() if ci_low <= v]
    named = ", ".join(f"{k} {v:.0%}" for k, v in baselines.items())
    verdict = HOLDS if not uncleared else (PARTLY if ci_low > baselines.get("random", 0.0) else FAILS)
    reason = f"held-out best head {heldout:.1%} [{ci_low:.1%}, {ci_high:.1%}] vs baselines {named}: " + (
        "the interval clears every baseline" if not uncleared else f"the interval does not clear {', '.join(uncleared)}"
    )
    return Verdict(verdict, reason)
