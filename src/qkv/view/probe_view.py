"""Show a :class:`qkv.lens.probing.ProbeResult`: a rich summary (best heads, baselines, held-out figure,
twins, verdict) and a PNG of the layer x head accuracy grid (matplotlib, Agg backend).

Example:
    >>> from qkv.view.probe_view import verdict_style
    >>> verdict_style("tracks the referent")
    'bold green'
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Group
from rich.table import Table
from rich.text import Text

from ..lens.probing import ABOVE_CHANCE, TRACKS, ProbeResult

__all__ = ["probe_renderable", "heads_table", "stats_table", "save_grid", "verdict_style"]


def verdict_style(verdict: str) -> str:
    """Green when a head tracks the referent, yellow above chance only, red otherwise."""
    return {TRACKS: "bold green", ABOVE_CHANCE: "bold yellow"}.get(verdict, "bold red")


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _ci(lo: float, hi: float) -> str:
    return f"[{_pct(lo)}, {_pct(hi)}]"


def heads_table(r: ProbeResult, top: int = 10) -> Table:
    """The ``top`` heads by accuracy on all items (selection on the scored data: biased upward)."""
    label = "layer" if r.measure == "rollout" else "layer.head"
    t = Table(title=f"Best heads of {r.model} ({r.measure}; {len(r.used)} items; chosen on the same items)")
    t.add_column(label)
    t.add_column("right", justify="right")
    t.add_column("accuracy", justify="right")
    t.add_column("95% CI (exact)", justify="right")
    for n, h, a in r.ranked()[:top]:
        t.add_row(
            f"L{n}" if r.measure == "rollout" else f"L{n}H{h}",
            f"{a.correct}/{a.n}",
            _pct(a.accuracy),
            _ci(a.ci_low, a.ci_high),
        )
    return t


def stats_table(r: ProbeResult) -> Table:
    """Held-out figure, baselines, mean over heads, permutation null and twin analysis."""
    t = Table(title="Against baselines and chance", show_header=True)
    t.add_column("figure")
    t.add_column("accuracy", justify="right")
    t.add_column("95% CI", justify="right")
    t.add_column("note", style="dim")
    if r.heldout is not None:
        s = r.heldout.score
        chosen = ", ".join(f"L{r.head(k)[0]}H{r.head(k)[1]}" for k, _ in r.heldout.chosen)
        t.add_row(
            Text("held-out best head", style="bold"),
            Text(_pct(s.accuracy), style="bold"),
            _ci(s.ci_low, s.ci_high),
            f"chosen on one half of the pairs, scored on the other ({chosen}); "
            f"median of {len(r.heldout.splits)} random splits, which range "
            f"{_pct(min(r.heldout.splits))}..{_pct(max(r.heldout.splits))}",
        )
    notes = {
        "first": "the first-mentioned candidate",
        "nearest": "the candidate nearest the query",
        "random": "a uniform pick (expected)",
    }
    for name, b in r.baselines.items():
        t.add_row(f"baseline: {name}", _pct(b["accuracy"]), _ci(b["ci_low"], b["ci_high"]), notes.get(name, ""))
    t.add_row("mean over heads", _pct(r.mean_over_heads), "", f"average of {len(r.heads)} heads' accuracy")
    t.add_row(
        "best of heads (same data)",
        _pct(r.null_best),
        "",
        f"permutation p = {r.null_p:.3g} ({r.null_rounds} twin-answer swaps)",
    )
    w = r.twins
    if w.pairs:
        t.add_row(
            "twins",
            "",
            "",
            f"{w.pairs} pairs: {w.mean_flips:.1f} of {w.heads} heads flip per pair; pairs "
            f"flipping toward the answers {w.toward_right}, away {w.toward_wrong} "
            f"(sign test p = {w.sign_test_p:.3g})",
        )
    return t


def probe_renderable(r: ProbeResult, top: int = 10) -> Group:
    """Items line, best heads, statistics, skipped items (with reasons) and the verdict line."""
    parts: list = [
        Text(f"{r.source or 'items'}: {r.total} items, {len(r.used)} used, {len(r.skipped)} skipped", style="dim"),
        heads_table(r, top),
        stats_table(r),
    ]
    for s in r.skipped[:10]:
        where = f"line {s.line}" if s.line is not None else s.id
        parts.append(Text(f"skipped {s.id} ({where}): {s.reason}", style="yellow"))
    if len(r.skipped) > 10:
        parts.append(Text(f"... and {len(r.skipped) - 10} more skipped (all are in the JSON output)", style="yellow"))
    line = Text("verdict: ", style="bold")
    line.append(r.verdict, style=verdict_style(r.verdict))
    line.append(f" -- {r.reason}")
    parts.append(line)
    return Group(*parts)


def save_grid(r: ProbeResult, path: str | Path, dpi: int = 150) -> Path:
    """Write the ``(N, H)`` per-head accuracy grid as a PNG (0.5 white; red above, blue below)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"the grid is written as PNG; give a path ending in .png, got {str(path)!r}")
    g = r.grid()  # (N, H)
    N, H = g.shape
    fig = Figure(figsize=(max(4.0, 0.45 * H + 2.0), max(3.0, 0.45 * N + 1.6)))
    ax = fig.add_subplot()
    im = ax.imshow(g, cmap="RdBu_r", vmin=0.0, vmax=1.0)
    for n in range(N):
        for h in range(H):
            ax.text(h, n, f"{100 * g[n, h]:.0f}", ha="center", va="center", fontsize=7)
    ax.set_xticks(range(H))
    ax.set_yticks(range(N))
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ho = "" if r.heldout is None else f"; held-out {100 * r.heldout.score.accuracy:.0f}%"
    ax.set_title(f"{r.model}: accuracy per head ({r.measure}, {len(r.used)} items{ho})", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    return path
