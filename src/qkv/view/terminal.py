"""Terminal views of a :class:`qkv.lens.Trace` (rich renderables).

Every function takes a trace (and the names of tokens) and returns a ``rich`` renderable; printing is the
caller's business. Shape legend: ``N`` layers, ``H`` heads, ``L`` tokens.

The one-line summaries are analysis, so they live in the lens (:mod:`qkv.lens.summary`); the names
``preference_summary``, ``attention_summary``, ``head_caveat``, ``head_flips`` and ``HeadFlip`` stay
importable from here as aliases (deprecated: import them from :mod:`qkv.lens.summary`).

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

from typing import Sequence

from rich.table import Table
from rich.text import Text

from ..lens.heads import choose_head
from ..lens.summary import (  # aliases of the lens's analysis (deprecated here)
    PREFERENCE_MARGIN,
    HeadFlip,
    attention_summary,
    head_caveat,
    head_flips,
    preference_summary,
)
from ..lens.trace import Attended, HeadPreference, Trace

__all__ = [
    "top_table",
    "breakdown_table",
    "heads_table",
    "compare_table",
    "preference_summary",
    "attention_summary",
    "head_caveat",
    "head_flips",
    "HeadFlip",
    "fmt_tokens",
    "show_token",
]


def show_token(token: str) -> str:
    """A token as printed: control characters made visible, rich markup never interpreted (use Text)."""
    return token.replace("\n", "\\n").replace("\t", "\\t")


def fmt_tokens(items: Sequence[Attended], digits: int = 2) -> Text:
    """``cat .41  mat .12 ...`` as rich Text (user text is never parsed as markup)."""
    out = Text()
    for n, a in enumerate(items):
        if n:
            out.append("  ")
        out.append(show_token(a.token), style="bold")
        out.append(f"\u00a0{a.value:.{digits}f}", style="dim")
    return out


def _head_label(layer: int, head: int) -> str:
    return f"L{layer} H{head}"


def top_table(
    trace: Trace,
    query: str | int,
    *,
    measure: str = "weights",
    k: int = 5,
    head: int | None = None,
    prefer: str | int | None = None,
    over: str | int | None = None,
) -> Table:
    """Per layer: the top-``k`` keys of ``query`` averaged over heads, and in one head (given or best)."""
    i = trace.index(query)
    title = Text(f"What '{show_token(trace.tokens[i])}' (token {i}) attends to, by {measure}")
    table = Table(title=title, title_justify="left", header_style="bold")
    table.add_column("layer", justify="right")
    if measure == "rollout":
        table.add_column(f"top {k} after rollout (all heads, residual included)")
        for n in range(trace.num_layers):
            table.add_row(str(n), fmt_tokens(trace.top(i, k, layer=n, measure="rollout")))
        return table
    how = (
        "given"
        if head is not None
        else (
            "most prefers " + repr(trace.tokens[trace.index(prefer)])
            if prefer is not None and over is not None
            else "sharpest"
        )
    )
    table.add_column(f"top {k}, mean of {trace.num_heads} heads")
    table.add_column(f"head ({how})")
    table.add_column(f"top {k} in that head")
    for n in range(trace.num_layers):
        h = choose_head(trace, i, layer=n, head=head, measure=measure, prefer=prefer, over=over)[1]
        table.add_row(
            str(n),
            fmt_tokens(trace.top(i, k, layer=n, measure=measure)),
            f"H{h}",
            fmt_tokens(trace.top(i, k, layer=n, head=h, measure=measure)),
        )
    return table


def breakdown_table(trace: Trace, query: str | int, layer: int, head: int) -> Table:
    """The essay's chain for ``query`` in one head: q.k -> scaled -> softmax weight -> ||a f(v)||, per key."""
    i = trace.index(query)
    rows = trace.breakdown(i, layer, head)
    best_w = max(r.weight for r in rows)
    best_v = max(r.value_share for r in rows)
    title = Text(
        f"Step by step: '{show_token(trace.tokens[i])}' in layer {trace.check_layer(layer)} "
        f"head {trace.check_head(head)}"
    )
    table = Table(
        title=title,
        title_justify="left",
        header_style="bold",
        caption="q·k = scores; scaled = q·k/√d; weight = softmax(scaled) (who); "
        "‖α·f(v)‖ = what arrives (Kobayashi et al. 2020), share = its fraction of the row",
        caption_justify="left",
    )
    for name, just in [
        ("key", "left"),
        ("token", "left"),
        ("q·k", "right"),
        ("scaled", "right"),
        ("weight", "right"),
        ("", "left"),
        ("‖α·f(v)‖", "right"),
        ("share", "right"),
    ]:
        table.add_column(name, justify=just)
    for r in rows:
        bar = "█" * round(12 * r.weight)
        style = "bold green" if r.weight == best_w else ("bold cyan" if r.value_share == best_v else None)
        table.add_row(
            str(r.index),
            Text(show_token(r.token)),
            f"{r.score:.2f}",
            f"{r.scaled:.2f}",
            f"{r.weight:.3f}",
            Text(bar, style="green"),
            f"{r.value_norm:.3f}",
            f"{r.value_share:.3f}",
            style=style,
        )
    return table


def heads_table(trace: Trace, prefs: Sequence[HeadPreference], prefer: str, over: str, limit: int = 10) -> Table:
    """The ``limit`` heads that most prefer ``prefer`` and the ``limit`` that most prefer ``over``."""
    n = len(prefs)
    shown = list(prefs[:limit]) + [p for p in prefs[-limit:] if p not in prefs[:limit]]
    table = Table(
        title=Text(f"Heads ranked by weight('{prefer}') - weight('{over}') ({n} heads)"),
        title_justify="left",
        header_style="bold",
    )
    for name, just in [
        ("rank", "right"),
        ("head", "left"),
        (prefer, "right"),
        (over, "right"),
        ("difference", "right"),
        ("prefers", "left"),
    ]:
        table.add_column(name, justify=just)
    for p in shown:
        rank = prefs.index(p) + 1
        who = prefer if p.diff > 0 else (over if p.diff < 0 else "neither")
        table.add_row(
            str(rank),
            _head_label(p.layer, p.head),
            f"{p.prefer:.3f}",
            f"{p.over:.3f}",
            f"{p.diff:+.3f}",
            Text(who),
            style="green" if p.diff > 0 else ("red" if p.diff < 0 else None),
        )
    return table


def compare_table(flips: Sequence[HeadFlip], prefer: str, over: str, limit: int = 12) -> Table:
    """Heads whose preference flips between text A and text B first, then the largest movers.

    A flip smaller than :data:`qkv.lens.summary.PREFERENCE_MARGIN` on either side is marked ``(by < 0.05)``.
    """
    margin = PREFERENCE_MARGIN
    ordered = [f for f in flips if f.flipped] + [f for f in flips if not f.flipped]
    table = Table(
        title=Text(f"Preference '{prefer}' - '{over}' per head, text A vs text B"),
        title_justify="left",
        header_style="bold",
    )
    for name, just in [("head", "left"), ("A", "right"), ("B", "right"), ("change", "right"), ("", "left")]:
        table.add_column(name, justify=just)
    for f in ordered[:limit]:

        def side(d: float) -> str:
            return prefer if d > 0 else over

        note = (
            f"flips: {side(f.diff_a)} -> {side(f.diff_b)}{'' if f.clear else ' (by < ' + str(margin) + ')'}"
            if f.flipped
            else f"keeps {side(f.diff_a)}"
        )
        table.add_row(
            _head_label(f.layer, f.head),
            f"{f.diff_a:+.3f}",
            f"{f.diff_b:+.3f}",
            f"{f.change:+.3f}",
            Text(note),
            style="bold yellow" if f.flipped else None,
        )
    return table
