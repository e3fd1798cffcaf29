"""``qkv.claims`` -- the essay's claims about attention, measured instead of repeated.

:func:`evaluate` measures five claims on synthetic data (where the closed form is known) and on a real
model's recorded forward pass, and grades each *holds*, *partly* or *does not hold* by the documented
thresholds of :class:`Thresholds`:

1. ``variance`` -- Var(q.k) grows in proportion to d_k; 1/sqrt(d_k) brings it to ~1.
2. ``saturation`` -- unscaled scores saturate softmax and shrink its gradient.
3. ``sharpening`` -- softmax sharpens: the top keys take most of the mass.
4. ``decoupling`` -- keys and values are decoupled (similar keys need not mean similar values).
5. ``coreference`` -- a pronoun attends to its referent ("it" -> "cat" in "The cat sat on the mat because it was
   tired."), judged by ``qkv.lens.probe`` on the shipped twin pairs (held-out best head against baselines).

Modules: :mod:`.measures` (softmax Jacobian norm, entropy, correlations), :mod:`.synthetic`,
:mod:`.real`, :mod:`.verdicts`, :mod:`.report`. The terminal table and figures are in
:mod:`qkv.view.claims_view`; the command is ``qkv claims``.

Example (the synthetic closed form; ``evaluate()`` also loads the model):
    >>> from qkv.claims import synthetic_scores, variance_verdict
    >>> s = synthetic_scores(dims=(16, 256), rows=256, keys=8, seed=0)
    >>> round(s.slope, 1), [round(r.var_scaled, 1) for r in s.rows]
    (1.0, [1.0, 1.0])
    >>> variance_verdict(s.slope, [r.var_scaled for r in s.rows], real_scaled=[9.0, 4.0, 1.5]).verdict
    'partly'
"""

from .measures import (
    cosine_matrix,
    entropy,
    loglog_slope,
    max_weight,
    pearson,
    rankdata,
    softmax_jacobian,
    softmax_jacobian_norm,
    spearman,
    top_mass,
)
from .real import (
    CONTROL_SENTENCE,
    CORPUS,
    ESSAY_SENTENCE,
    Coreference,
    DecouplingLayer,
    PairExample,
    SaturationLayer,
    SharpnessLayer,
    VarianceLayer,
    coreference,
    real_decoupling,
    real_saturation,
    real_sharpness,
    real_variance,
)
from .report import ClaimResult, ClaimsReport, evaluate
from .synthetic import DIMS, SyntheticResult, SyntheticRow, synthetic_scores
from .verdicts import (
    FAILS,
    HOLDS,
    PARTLY,
    VERDICTS,
    Thresholds,
    Verdict,
    coreference_verdict,
    decoupling_verdict,
    probe_verdict,
    saturation_verdict,
    sharpening_verdict,
    variance_verdict,
)

__all__ = [
    "evaluate",
    "ClaimsReport",
    "ClaimResult",
    "Thresholds",
    "Verdict",
    "HOLDS",
    "PARTLY",
    "FAILS",
    "VERDICTS",
    "variance_verdict",
    "saturation_verdict",
    "sharpening_verdict",
    "decoupling_verdict",
    "coreference_verdict",
    "probe_verdict",
    "synthetic_scores",
    "SyntheticResult",
    "SyntheticRow",
    "DIMS",
    "CORPUS",
    "ESSAY_SENTENCE",
    "CONTROL_SENTENCE",
    "real_variance",
    "real_saturation",
    "real_sharpness",
    "real_decoupling",
    "coreference",
    "VarianceLayer",
    "SaturationLayer",
    "SharpnessLayer",
    "DecouplingLayer",
    "PairExample",
    "Coreference",
    "softmax_jacobian",
    "softmax_jacobian_norm",
    "entropy",
    "max_weight",
    "top_mass",
    "loglog_slope",
    "cosine_matrix",
    "pearson",
    "spearman",
    "rankdata",
]
