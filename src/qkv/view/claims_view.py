"""Show a :class:`qkv.claims.ClaimsReport`: a rich verdict table, a markdown table, PNG figures.

Figures (matplotlib, Agg backend, no display needed), drawn from the report's ``data`` only:

* ``claim1_variance.png`` -- Var(q.k) against d_k on log-log axes (synthetic, with the fit and the
  closed form ``d_k``) and per layer of the model: raw, scaled and the two predictions;
* ``claim2_saturation.png`` -- mean max-weight and softmax-Jacobian norm, with and without the scale,
  against d_k (synthetic) and per layer (model);
* ``claim3_sharpening.png`` -- per layer, top-1 / top-3 mass against a uniform row and a linear
  normalisation.

Example:
    >>> from qkv.view.claims_view import verdict_style
    >>> verdict_style("holds"), verdict_style("does not hold")
    ('bold green', 'bold red')
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Group
from rich.table import Table
from rich.text import Text

from ..claims.report import ClaimsReport

__all__ = ["verdict_table", "report_renderable", "markdown_table", "save_figures", "verdict_style", "FIGURES"]

FIGURES = ("claim1_variance.png", "claim2_saturation.png", "claim3_sharpening.png")
_STYLES = {"holds": "bold green", "partly": "bold yellow", "does not hold": "bold red"}


def verdict_style(verdict: str) -> str:
    """The rich style of a verdict (green / yellow / red)."""
    return _STYLES.get(verdict, "bold")


def verdict_table(report: ClaimsReport) -> Table:
    """Claim - what was measured - figure - verdict, one row per claim."""
    table = Table(title=f"The essay's claims, measured on {report.model}", show_lines=True, expand=True)
    table.add_column("claim", ratio=3)
    table.add_column("what was measured", ratio=4)
    table.add_column("figure", ratio=5)
    table.add_column("verdict", no_wrap=True)
    for claim, measured, figure, verdict in report.rows:
        table.add_row(
            Text(claim), Text(measured, style="dim"), Text(figure), Text(verdict, style=verdict_style(verdict))
        )
    return table


def report_renderable(report: ClaimsReport, reasons: bool = True) -> Group:
    """The table, then per claim the plain summary (and the threshold reason), then the run time."""
    parts: list[Table | Text] = [verdict_table(report)]
    for c in report.claims:
        line = Text()
        line.append(f"{c.number}. ", style="bold")
        line.append(c.verdict, style=verdict_style(c.verdict))
        line.append(f" -- {c.summary}")
        parts.append(line)
        if reasons:
            parts.append(Text(f"   why: {c.reason}", style="dim"))
    parts.append(Text(f"measured in {report.seconds:.1f} s; thresholds: qkv.claims.Thresholds", style="dim"))
    return Group(*parts)


def markdown_table(report: ClaimsReport, summaries: bool = True) -> str:
    """The verdict table as GitHub markdown (``|`` in cells escaped), optionally followed by the summaries."""

    def cell(s: str) -> str:
        return s.replace("|", "\\|").replace("\n", " ")

    lines = ["| claim | what was measured | figure | verdict |", "|---|---|---|---|"]
    lines += [f"| {cell(a)} | {cell(b)} | {cell(c)} | **{cell(d)}** |" for a, b, c, d in report.rows]
    if summaries:
        lines.append("")
        lines += [
            f"{c.number}. **{c.verdict}** -- {cell(c.summary)}  \n   *Why:* {cell(c.reason)}" for c in report.claims
        ]
    return "\n".join(lines) + "\n"


def _figure(width: float, height: float, ncols: int):
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")  # no pyplot: no global state, no GUI
    return fig, fig.subplots(1, ncols)


def _variance_figure(report: ClaimsReport, path: Path) -> None:
    c = report.claim("variance")
    syn, real = c.data["synthetic"], c.data["real"]
    fig, (a, b) = _figure(11, 4.2, 2)
    d = syn["d_k"]
    a.loglog(d, syn["var_raw"], "o", label="Var(q.k), measured")
    a.loglog(d, d, "--", color="grey", label="closed form: d_k")
    fit = [pow(2.718281828459045, syn["intercept"]) * x ** syn["slope"] for x in d]
    a.loglog(d, fit, "-", alpha=0.6, label=f"fit: slope {syn['slope']:.3f}")
    a.loglog(d, syn["var_scaled"], "s", label="Var(q.k/sqrt(d_k))")
    a.axhline(1.0, color="grey", lw=0.8)
    a.set_xlabel("d_k")
    a.set_ylabel("variance")
    a.set_title(f"synthetic: unit-normal q, k ({syn['rows']} x {syn['keys']} per d_k)", fontsize=10)
    a.legend(fontsize=8)
    layers = [r["layer"] for r in real]
    b.semilogy(layers, [r["var_raw"] for r in real], "o-", label="Var(q.k)")
    b.semilogy(layers, [r["var_scaled"] for r in real], "s-", label="Var(q.k/sqrt(d_k))")
    b.semilogy(layers, [r["predicted_scaled"] for r in real], "x--", label="var_q * var_k (essay's assumption)")
    b.semilogy(layers, [r["predicted_independent"] for r in real], "+:", label="independent q, k (measured cov.)")
    b.axhline(1.0, color="grey", lw=0.8)
    b.set_xlabel("layer")
    b.set_title(f"{report.model}: d_k = {real[0]['d_k']}, {len(report.sentences)} sentences", fontsize=10)
    b.legend(fontsize=8)
    fig.suptitle(f"Claim 1 -- {c.verdict}", fontsize=11)
    fig.savefig(path, dpi=120)


def _saturation_figure(report: ClaimsReport, path: Path) -> None:
    c = report.claim("saturation")
    syn, real = c.data["synthetic"], c.data["real"]
    fig, (a, b) = _figure(11, 5.0, 2)
    d = syn["d_k"]
    a.semilogx(d, syn["max_unscaled"], "o-", color="C3", label="max weight, unscaled")
    a.semilogx(d, syn["max_scaled"], "o--", color="C0", label="max weight, scaled")
    a.semilogx(d, syn["jacobian_unscaled"], "s-", color="C1", label="|J|, unscaled")
    a.semilogx(d, syn["jacobian_scaled"], "s--", color="C2", label="|J|, scaled")
    a.set_xlabel("d_k")
    a.set_ylim(0, 1.02)
    a.set_title(f"synthetic: softmax over {syn['keys']} keys", fontsize=10)
    a.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    layers = [r["layer"] for r in real]
    b.plot(layers, [r["max_unscaled"] for r in real], "o-", color="C3", label="max weight, unscaled")
    b.plot(layers, [r["max_scaled"] for r in real], "o--", color="C0", label="max weight, scaled (model)")
    b.plot(layers, [r["jacobian_unscaled"] for r in real], "s-", color="C1", label="|J|, unscaled")
    b.plot(layers, [r["jacobian_scaled"] for r in real], "s--", color="C2", label="|J|, scaled (model)")
    b.set_ylim(0, 1.02)
    b.set_xlabel("layer")
    b.set_title(f"{report.model}: every query row", fontsize=10)
    b.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    fig.suptitle(f"Claim 2 -- {c.verdict}  (|J| = ||diag(p) - p p^T||_F, mean per row)", fontsize=11)
    fig.savefig(path, dpi=120)


def _sharpening_figure(report: ClaimsReport, path: Path) -> None:
    c = report.claim("sharpening")
    real = c.data["real"]
    fig, a = _figure(8, 5.0, 1)
    layers = [r["layer"] for r in real]
    w = 0.2
    a.bar([x - 1.5 * w for x in layers], [r["top1"] for r in real], w, label="top-1 mass")
    a.bar([x - 0.5 * w for x in layers], [r["top3"] for r in real], w, label="top-3 mass")
    a.bar([x + 0.5 * w for x in layers], [r["top1_linear"] for r in real], w, label="top-1, linear normalisation")
    a.bar(
        [x + 1.5 * w for x in layers],
        [r["top1_special"] for r in real],
        w,
        color="grey",
        alpha=0.6,
        label="rows whose top key is special",
    )
    a.plot(layers, [r["uniform1"] for r in real], "k--", label="uniform 1/n")
    a.plot(layers, [r["uniform3"] for r in real], "k:", label="uniform 3/n")
    a.set_ylim(0, 1.0)
    a.set_xlabel("layer")
    a.set_xticks(layers)
    a.set_title(f"Claim 3 -- {c.verdict}: {report.model}, every query row", fontsize=10)
    a.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3)
    fig.savefig(path, dpi=120)


def save_figures(report: ClaimsReport, directory: str | Path) -> list[Path]:
    """Write :data:`FIGURES` for claims 1-3 into ``directory`` (created if missing); returns the paths."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"save_figures wants a directory, but {str(directory)!r} is a file; pick a directory name")
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / name for name in FIGURES]
    for draw, path in zip((_variance_figure, _saturation_figure, _sharpening_figure), paths):
        draw(report, path)
    return paths
