"""Which head to show: the one rule every view and the CLI use.

Example:
    >>> import torch
    >>> from qkv.lens.trace import Trace
    >>> w = torch.tensor([[[[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.5, 0.1, 0.4]],
    ...                    [[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.1, 0.8, 0.1]]]])   # (N=1, H=2, L=3, L=3)
    >>> t = Trace.from_tensors("cat mat it", ["cat", "mat", "it"], weights=w)
    >>> choose_head(t, "it")                                 # the sharpest head on a content token
    (0, 1)
    >>> choose_head(t, "it", prefer="cat", over="mat")        # the head that most prefers cat over mat
    (0, 0)
"""

from __future__ import annotations

from .trace import Trace

__all__ = ["choose_head"]


def choose_head(
    trace: Trace,
    query: str | int,
    *,
    layer: int | None = None,
    head: int | None = None,
    measure: str = "weights",
    prefer: str | int | None = None,
    over: str | int | None = None,
) -> tuple[int, int]:
    """The ``(layer, head)`` to show for ``query``.

    Given both ``layer`` and ``head``: those. Otherwise, among the heads of the given layer (or of every
    layer) and the given head index (or every head): with ``prefer`` and ``over``, the head whose
    ``measure(query -> prefer) - measure(query -> over)`` is largest; else the sharpest head -- the one that
    puts the most on a single content token (not a special token, not ``query`` itself). ``rollout`` mixes
    all heads, so heads are chosen by weights then. Ties go to the first (lowest layer, then head).

    Raises:
        ValueError: an out-of-range layer/head or a token not in the text.
    """
    i = trace.index(query)
    if layer is not None and head is not None:
        return trace.check_layer(layer), trace.check_head(head)
    m = trace.values if measure == "values" else trace.weights  # (N, H, L, L); rollout chooses by weights
    layers = [trace.check_layer(layer)] if layer is not None else range(trace.num_layers)
    heads = [trace.check_head(head)] if head is not None else range(trace.num_heads)
    cand = [(n, h) for n in layers for h in heads]
    if prefer is not None and over is not None:
        a, b = trace.index(prefer), trace.index(over)
        return max(cand, key=lambda nh: float(m[nh[0], nh[1], i, a] - m[nh[0], nh[1], i, b]))
    content = [j for j in range(len(trace)) if not trace.special[j] and j != i] or list(range(len(trace)))
    return max(cand, key=lambda nh: float(m[nh[0], nh[1], i, content].max()))
