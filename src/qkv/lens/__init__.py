"""qkv.lens -- record every attention step of a real model and measure it.

``trace(text, model)`` runs the model once and keeps ``q, k, v, scores, scaled, weights, output`` of
every layer and head (:class:`Trace`); :mod:`qkv.lens.attribution` holds the value-norm and rollout
maths on plain tensors.
"""
from .attribution import normalise_rows, residual_attention, rollout, transformed_value_norms, value_norms
from .trace import MEASURES, Attended, BreakdownRow, HeadPreference, Trace, trace

__all__ = ["trace", "Trace", "Attended", "HeadPreference", "BreakdownRow", "MEASURES", "value_norms",
           "transformed_value_norms", "normalise_rows", "residual_attention", "rollout"]
