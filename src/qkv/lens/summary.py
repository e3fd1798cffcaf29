"""What a trace says about one query, in words and as plain data: the analysis every view draws.

The sentences the CLI prints, its HTML page shows and ``qkv serve`` returns come from here (the views only
draw them): :func:`preference_summary` (one query, a ``prefer``/``over`` pair), :func:`attention_summary`
(no pair), :func:`head_caveat` (a head that marks a word for every token), :func:`head_flips` and
:func:`compare_summary` (a minimal pair), and :func:`explanation` -- the part of the explain command's JSON
and ``POST /api/trace`` they share (the resolved query and pair, the head shown first, its breakdown, the
summary and the caveat).

A head *prefers* ``prefer`` when its ``measure(query -> prefer) - measure(query -> over)`` is positive; a
*flip* between two texts is a change of that sign, however small. :data:`PREFERENCE_MARGIN` (0.05, the margin
``qkv claims`` counts as a preference) separates the flips that matter from ties that wobble.

Shape legend: ``N`` layers, ``H`` heads, ``L`` tokens.

Example:
    >>> import torch
    >>> from qkv.lens.trace import Trace
    >>> w = torch.tensor([[[[1.0, 0.0, 0.0], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1]]]])   # (N=1, H=1, L=3, L=3)
    >>> t = Trace.from_tensors("cat mat it", ["cat", "mat", "it"], weights=w)
    >>> print(preference_summary(t, "it", "cat", "mat"))  # doctest: +NORMALIZE_WHITESPACE
    'it' -> 'cat' vs 'mat' (weights): the head that most prefers 'cat' (L0 H0) gives 0.600 vs 0.300;
    averaged over all 1 heads 0.600 vs 0.300, so on average 'it' prefers 'cat'; 1 of 1 heads prefer 'cat'.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

from .heads import choose_head
from .rows import HeadPreference
from .trace import MEASURES, Trace

__all__ = [
    "preference_summary",
    "attention_summary",
    "head_caveat",
    "head_flips",
    "compare_summary",
    "explanation",
    "HeadFlip",
    "PREFERENCE_MARGIN",
]

#: An attention-weight difference that counts as a preference (``qkv claims``' margin); smaller flips are ties.
PREFERENCE_MARGIN = 0.05


def _head_label(layer: int, head: int) -> str:
    return f"L{layer} H{head}"


def preference_summary(
    trace: Trace, query: str | int, prefer: str | int, over: str | int, measure: str = "weights"
) -> str:
    """One honest sentence: the head that most prefers ``prefer``, the average over all heads, and the count."""
    q, a, b = (trace.tokens[trace.index(x)] for x in (query, prefer, over))
    if measure == "rollout":
        r = trace.row(query, measure="rollout")
        ia, ib = trace.index(prefer), trace.index(over)
        who = a if r[ia] > r[ib] else (b if r[ib] > r[ia] else "neither")
        return (
            f"'{q}' -> '{a}' vs '{b}' (rollout after the last layer): {float(r[ia]):.3f} vs {float(r[ib]):.3f}, "
            f"so '{q}' draws more on {who!r}"
            if who != "neither"
            else f"'{q}' draws equally on both."
        )
    prefs = trace.heads(query, prefer, over, measure)
    n, top = len(prefs), prefs[0]
    mean_a = sum(p.prefer for p in prefs) / n
    mean_b = sum(p.over for p in prefs) / n
    count = sum(p.diff > 0 for p in prefs)
    if top.diff > 0:
        head = (
            f"the head that most prefers '{a}' ({_head_label(top.layer, top.head)}) gives "
            f"{top.prefer:.3f} vs {top.over:.3f}"
        )
    else:
        head = f"no head gives '{a}' more {measure} than '{b}'"
    avg = f"'{q}' prefers '{a}'" if mean_a > mean_b else (f"'{q}' prefers '{b}'" if mean_b > mean_a else "a tie")
    return (
        f"'{q}' -> '{a}' vs '{b}' ({measure}): {head}; averaged over all {n} heads "
        f"{mean_a:.3f} vs {mean_b:.3f}, so on average {avg}; {count} of {n} heads prefer '{a}'."
    )


def head_caveat(trace: Trace, query: str | int, prefer: str | int, layer: int, head: int) -> str | None:
    """A caution when a head gives ``prefer`` about as much from *every* token as from ``query``.

    Such a head marks the word (or its position) for everyone; only a minimal pair (``qkv compare``)
    can tell whether it tracks the referent. Returns None when the query stands out.
    """
    i, a = trace.index(query), trace.index(prefer)
    w = trace.attention(layer, head)  # (L, L)
    from_query, from_all = float(w[i, a]), float(w[:, a].mean())
    if from_all < 0.5 * from_query:
        return None
    return (
        f"Note: L{trace.check_layer(layer)} H{trace.check_head(head)} gives '{trace.tokens[a]}' {from_all:.3f} "
        f"on average from all {len(trace)} tokens (vs {from_query:.3f} from '{trace.tokens[i]}'), so it marks "
        f"'{trace.tokens[a]}' for every token; a minimal pair (qkv compare) tests whether a head tracks the referent."
    )


def attention_summary(trace: Trace, query: str | int, measure: str = "weights") -> str:
    """One honest sentence without a contrast: the mean top content token, the special tokens' share."""
    i = trace.index(query)
    r = trace.row(i, measure=measure)  # (L,) mean over layers and heads (or final rollout)
    content = [j for j in range(len(trace)) if not trace.special[j] and j != i]
    q = trace.tokens[i]
    parts = []
    if content:
        j = max(content, key=lambda c: float(r[c]))
        where = (
            "after rollout through all layers"
            if measure == "rollout"
            else f"averaged over all {trace.num_layers * trace.num_heads} heads"
        )
        noun = {"weights": "weight", "values": "value-norm share", "rollout": "rollout share"}[measure]
        parts.append(
            f"{where}, of the other content tokens '{q}' gives the most {noun} to "
            f"'{trace.tokens[j]}' (token {j}: {float(r[j]):.3f})"
        )
    sp = sum(float(r[j]) for j in range(len(trace)) if trace.special[j])
    if any(trace.special):
        parts.append(f"special tokens take {sp:.3f} and '{q}' itself {float(r[i]):.3f}")
    return "; ".join(parts) + "." if parts else f"'{q}' is the only token."


class HeadFlip(NamedTuple):
    """One head's preference in two texts (``diff = prefer - over`` in each)."""

    layer: int
    head: int
    diff_a: float
    diff_b: float

    @property
    def flipped(self) -> bool:
        """The sign of the preference changed (by any amount)."""
        return (self.diff_a > 0) != (self.diff_b > 0) and self.diff_a != 0 and self.diff_b != 0

    @property
    def clear(self) -> bool:
        """Flipped with at least :data:`PREFERENCE_MARGIN` on both sides (what ``qkv claims`` counts)."""
        return self.flipped and min(abs(self.diff_a), abs(self.diff_b)) >= PREFERENCE_MARGIN

    @property
    def change(self) -> float:
        return self.diff_b - self.diff_a


def head_flips(a: Sequence[HeadPreference], b: Sequence[HeadPreference]) -> list[HeadFlip]:
    """Pair two :meth:`Trace.heads` rankings head by head, sorted by how much the preference moved."""
    by = {(p.layer, p.head): p.diff for p in b}
    out = [HeadFlip(p.layer, p.head, p.diff, by[(p.layer, p.head)]) for p in a]
    return sorted(out, key=lambda f: -abs(f.change))


def compare_summary(flips: Sequence[HeadFlip], prefer: str, over: str, names: int = 6) -> str:
    """One sentence for a minimal pair: how many heads switch each way, and how many of them clearly.

    A switch is any change of sign; the count of those with :data:`PREFERENCE_MARGIN` on both sides is what
    ``qkv claims`` reports, so that "0 heads switch" there and "L3 H1 flips" here do not contradict.
    """

    def listed(fs: list[HeadFlip]) -> str:
        if not fs:
            return ""
        return " (" + ", ".join(f"L{f.layer}H{f.head}" for f in fs[:names]) + (" ..." if len(fs) > names else "") + ")"

    to_b = [f for f in flips if f.flipped and f.diff_a > 0]
    to_a = [f for f in flips if f.flipped and f.diff_a < 0]
    n, clear = len(flips), sum(f.clear for f in flips)
    return (
        f"{len(to_b)} of {n} heads switch from '{prefer}' to '{over}'{listed(to_b)} and {len(to_a)} from "
        f"'{over}' to '{prefer}'{listed(to_a)}; the other {n - len(to_a) - len(to_b)} keep their preference. "
        f"A switch is any change of sign; {clear} of the {len(to_a) + len(to_b)} switch by at least "
        f"{PREFERENCE_MARGIN} on both sides (the margin qkv claims counts as a preference)."
    )


def explanation(
    trace: Trace,
    *,
    query: str | int | None = None,
    prefer: str | int | None = None,
    over: str | int | None = None,
    layer: int | None = None,
    head: int | None = None,
    measure: str = "weights",
) -> dict:
    """What the explain command's JSON and ``POST /api/trace`` both say about one query, as plain data.

    The query and pair resolve by :meth:`Trace.resolve` (the essay's cat/mat pair by default on the essay's
    sentence), the head shown first by :func:`qkv.lens.heads.choose_head`.

    Returns:
        ``{"query": {"index", "token"}, "prefer": str|None, "over": str|None, "layer", "head", "measure",
        "breakdown": {"layer", "head", "rows": [BreakdownRow as dict] (L)}, "summary": str, "caveat": str|None}``

    Raises:
        ValueError: a bad measure, token, layer or head (in the library's words).
    """
    if measure not in MEASURES:
        raise ValueError(f"measure must be one of {', '.join(MEASURES)}, got {measure!r}")
    if measure == "rollout" and head is not None:
        raise ValueError("rollout combines all heads of a layer; do not pass a head with measure='rollout'")
    i, a, b = trace.resolve(query, prefer, over)
    if layer is not None:
        trace.check_layer(layer)
    if head is not None:
        trace.check_head(head)
    n, h = choose_head(trace, i, layer=layer, head=head, measure=measure, prefer=a, over=b)
    paired = a is not None
    return {
        "query": {"index": i, "token": trace.tokens[i]},
        "prefer": trace.tokens[a] if paired else None,
        "over": trace.tokens[b] if paired else None,
        "layer": n,
        "head": h,
        "measure": measure,
        "breakdown": {"layer": n, "head": h, "rows": [r._asdict() for r in trace.breakdown(i, n, h)]},
        "summary": preference_summary(trace, i, a, b, measure) if paired else attention_summary(trace, i, measure),
        "caveat": head_caveat(trace, i, a, n, h) if paired else None,
    }
