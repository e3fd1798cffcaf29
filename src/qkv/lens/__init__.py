"""qkv.lens -- record every attention step of a real model and measure it.

``qkv.trace(text, model)`` (defined in :mod:`qkv.lens.trace`) runs the model once and keeps
``q, k, v, scores, scaled, weights, output`` of every layer and head as a :class:`Trace`;
:mod:`qkv.lens.attribution` holds the value-norm and rollout maths on plain tensors.

The function ``trace`` is deliberately not re-exported here: ``qkv.lens.trace`` stays the module
(so ``import qkv.lens.trace as m`` and monkeypatching keep working); call ``qkv.trace``.
"""

from .attribution import normalise_rows, residual_attention, rollout, transformed_value_norms, value_norms
from .effects import effect, embedding_cosine, logit_diff, preference
from .essay import ESSAY_SENTENCE
from .interventions import ablate, knockout, patch, swap
from .probing import probe
from .rows import Resolved
from .trace import MEASURES, Attended, BreakdownRow, HeadPreference, Trace

__all__ = [
    "ablate",
    "knockout",
    "swap",
    "patch",
    "effect",
    "preference",
    "embedding_cosine",
    "logit_diff",
    "probe",
    "Trace",
    "Attended",
    "HeadPreference",
    "BreakdownRow",
    "Resolved",
    "MEASURES",
    "ESSAY_SENTENCE",
    "value_norms",
    "transformed_value_norms",
    "normalise_rows",
    "residual_attention",
    "rollout",
]
