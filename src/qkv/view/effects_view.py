"""Show intervention effects: a layer x head grid as a rich table (largest effects marked), the top heads, and
a PNG heatmap (matplotlib, Agg backend). Draws :class:`qkv.lens.sweeps.HeadEffects`, ``PatchResult`` and
:class:`qkv.lens.causal_probe.CausalProbe`; analyses nothing.

Example:
    >>> import numpy as np
    >>> from qkv.view.effects_view import grid_table
    >>> grid_table(np.array([[0.5, -0.25]]), "effect").row_count
    1
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from rich.table import Table

from ..lens.causal_probe import CausalProbe

__all__ = ["grid_table", "top_table", "causal_table", "save_grid_png"]


def grid_table(grid: np.ndarray, title: str, layers: Sequence[int] | None = None, fmt: str = "+.3f") -> Table:
    """``(N, H)`` values as a table: one row per layer, one column per head; the 5 largest ``|value|`` in bold."""
    layers = list(range(grid.shape[0])) if layers is None else list(layers)
    t = Table(title=title)
    t.add_column("layer", justify="right")
    for h in range(grid.shape[1]):
        t.add_column(f"H{h}", justify="right")
    big = set(np.argsort(-np.abs(grid).ravel(), kind="stable")[:5].tolist())
    for r, n in enumerate(layers):
        cells = []
        for h in range(grid.shape[1]):
            k, v = r * grid.shape[1] + h, grid[r, h]
            style = ("bold red" if v < 0 else "bold green") if k in big else ""
            cells.append(f"[{style}]{v:{fmt}}[/]" if style else f"{v:{fmt}}")
        t.add_row(f"L{n}", *cells)
    return t


def top_table(rows: Sequence[tuple[int, int, float]], title: str, label: str = "effect") -> Table:
    """``(layer, head, value)`` rows as a small table."""
    t = Table(title=title)
    t.add_column("head")
    t.add_column(label, justify="right")
    for n, h, v in rows:
        t.add_row(f"L{n}H{h}", f"{v:+.4f}")
    return t


def causal_table(r: CausalProbe, top: int = 10) -> Table:
    """The ``top`` heads whose ablation lowers the referent preference most, with intervals and weight preference."""
    mean, lo, hi = r.head_means()
    wp = r.weight_pref.mean(0)
    H = r.shape[1]
    t = Table(title=f"Causal probe: {r.how}-ablating each head of {r.model} ({len(r.used)} items)")
    for c in ("head", "effect on preference", "95% CI (pairs)", "weight preference"):
        t.add_column(c, justify="right" if c != "head" else "left")
    for k in np.argsort(mean, kind="stable")[:top]:
        t.add_row(f"L{k // H}H{k % H}", f"{mean[k]:+.4f}", f"[{lo[k]:+.4f}, {hi[k]:+.4f}]", f"{wp[k]:+.3f}")
    return t


def save_grid_png(grid: np.ndarray, path: str | Path, title: str, layers: Sequence[int] | None = None) -> Path:
    """A diverging heatmap of ``(N, H)`` values (0 white) written to ``path`` (``.png``)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"save_grid_png wants a path ending in .png, got {str(path)!r}; add .png to the file name")
    layers = list(range(grid.shape[0])) if layers is None else list(layers)
    lim = max(float(np.abs(grid).max()), 1e-9)
    fig = Figure(figsize=(max(4.0, 0.45 * grid.shape[1] + 2), max(2.5, 0.45 * grid.shape[0] + 1.5)))
    ax = fig.add_subplot()
    im = ax.imshow(grid, cmap="RdBu", vmin=-lim, vmax=lim)
    ax.set_xticks(range(grid.shape[1]), [f"H{h}" for h in range(grid.shape[1])], fontsize=8)
    ax.set_yticks(range(len(layers)), [f"L{n}" for n in layers], fontsize=8)
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    return path
