"""What :class:`qkv.lens.trace.Trace`'s questions answer with: plain named tuples (re-exported by
:mod:`qkv.lens.trace` and :mod:`qkv.lens`).

* :class:`Attended` -- :meth:`Trace.top <qkv.lens.trace.Trace.top>`: one key and its weight/value share.
* :class:`HeadPreference` -- :meth:`Trace.heads <qkv.lens.trace.Trace.heads>`: one head, ``prefer - over``.
* :class:`BreakdownRow` -- :meth:`Trace.breakdown <qkv.lens.trace.Trace.breakdown>`: the chain for one key.
* :class:`Resolved` -- :meth:`Trace.resolve <qkv.lens.trace.Trace.resolve>`: a query and a pair as indices.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["Attended", "HeadPreference", "BreakdownRow", "Resolved"]


class Attended(NamedTuple):
    """One key token and how much the query attends to it under some measure."""

    index: int
    token: str
    value: float


class HeadPreference(NamedTuple):
    """How much one head's query puts on ``prefer`` versus ``over`` (``diff = prefer - over``)."""

    layer: int
    head: int
    prefer: float
    over: float
    diff: float


class BreakdownRow(NamedTuple):
    """The essay's chain for one (query, key) pair in one head.

    ``score = q.k``, ``scaled = score * scale`` (``1/sqrt(D)``), ``weight = softmax(scaled)``,
    ``value_norm = ||weight * f(v)||`` (Kobayashi et al. 2020) and ``value_share`` its fraction of the row.
    """

    index: int
    token: str
    score: float
    scaled: float
    weight: float
    value_norm: float
    value_share: float


class Resolved(NamedTuple):
    """A query and an optional ``prefer``/``over`` pair as token indices (``prefer``/``over`` None: no pair)."""

    query: int
    prefer: int | None
    over: int | None
