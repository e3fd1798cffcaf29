"""A :class:`qkv.lens.Trace` inline in Jupyter: the self-contained page in a sandboxed ``<iframe>``.

The page of :func:`qkv.view.html.render_html` (no CDN, no network: its Content-Security-Policy allows
only its own script) goes into ``<iframe srcdoc="...">`` with the page HTML-escaped, and
``sandbox="allow-scripts"``: each trace runs in its own document, so several traces on one notebook
page never share element ids, styles or script state, and the page cannot reach the notebook.

Example:
    >>> import torch
    >>> from qkv.lens.trace import Trace
    >>> t = Trace.from_tensors("a b", ["a", "b"], weights=torch.full((1, 1, 2, 2), 0.5))
    >>> cell = notebook_html(t)
    >>> cell.startswith("<iframe"), 'sandbox="allow-scripts"' in cell, "<script" in cell
    (True, True, False)
"""

from __future__ import annotations

import html

from ..lens.trace import Trace, set_html_display
from .html import render_html

__all__ = ["notebook_html"]


def notebook_html(trace: Trace, *, height: int | None = None, **kwargs) -> str:
    """One ``<iframe srcdoc=...>`` holding :func:`render_html` ``(trace, **kwargs)``.

    Args:
        trace: what to show.
        height: iframe height in pixels (default grows with layers and tokens, 480..900).
        kwargs: passed to :func:`render_html` (``query``, ``layer``, ``head``, ``measure``...).
    """
    try:
        page = render_html(trace, **kwargs)
    except ValueError as e:  # e.g. a text too long for one page: say so in the cell instead of a traceback
        return f"<pre>{html.escape(repr(trace))}: {html.escape(str(e))}</pre>"
    if height is None:
        height = max(480, min(900, 260 + 28 * trace.num_layers + 6 * len(trace)))
    title = html.escape(f"qkv trace: {trace.text[:60]}", quote=True)
    return (
        f'<iframe srcdoc="{html.escape(page, quote=True)}" sandbox="allow-scripts" title="{title}" '
        f'style="width: 100%; height: {int(height)}px; border: 1px solid #ddd; border-radius: 4px;"></iframe>'
    )


set_html_display(notebook_html)  # Trace._repr_html_ draws with this from now on
