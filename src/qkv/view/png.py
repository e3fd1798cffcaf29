"""A PNG heatmap of one head (matplotlib, Agg backend: no display needed).

Rows are queries, columns are keys; the colour is the weight (or value-norm share, or rollout).
"""

from __future__ import annotations

from pathlib import Path

from ..lens.trace import Trace

__all__ = ["save_heatmap"]


def save_heatmap(
    trace: Trace,
    path: str | Path,
    layer: int,
    head: int | None,
    measure: str = "weights",
    query: str | int | None = None,
    dpi: int = 150,
) -> Path:
    """Write the ``(L, L)`` map of one head (``head=None``: mean of heads; rollout ignores it) to ``path``.

    Args:
        trace: the recorded attention.
        path: a ``.png`` file to write.
        layer, head: which head.
        measure: ``weights``, ``values`` or ``rollout``.
        query: a token whose row is outlined (optional).
        dpi: resolution.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"save_heatmap wants a path ending in .png, got {str(path)!r}; add .png to the file name")
    m = trace.matrix(layer, None if measure == "rollout" else head, measure).numpy()  # (L, L)
    labels = [t.replace("$", r"\$") for t in trace.tokens]
    L = len(labels)
    size = max(4.0, 0.32 * L + 1.8)
    fig = Figure(figsize=(size + 1.0, size))  # no pyplot: no global state, no GUI backend
    ax = fig.add_subplot()
    im = ax.imshow(m, cmap="Blues", vmin=0.0, vmax=max(float(m.max()), 1e-9))
    ax.set_xticks(range(L), labels, rotation=90, fontsize=8)
    ax.set_yticks(range(L), labels, fontsize=8)
    ax.set_xlabel("key")
    ax.set_ylabel("query")
    where = (
        f"layer {trace.check_layer(layer)} (rollout)"
        if measure == "rollout"
        else (
            f"layer {trace.check_layer(layer)} head {trace.check_head(head)}"
            if head is not None
            else f"layer {trace.check_layer(layer)} (mean of heads)"
        )
    )
    ax.set_title(f"{measure}: {where}", fontsize=10)
    if query is not None:
        i = trace.index(query)
        ax.add_patch(matplotlib.patches.Rectangle((-0.5, i - 0.5), L, 1, fill=False, edgecolor="#d9480f", lw=1.5))
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    return path
