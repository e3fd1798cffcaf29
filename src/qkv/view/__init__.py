"""qkv.view -- show a :class:`qkv.lens.Trace`: rich terminal tables, one self-contained HTML page, a PNG heatmap."""

from . import notebook  # installs the notebook display of a Trace (Trace._repr_html_)
from .html import render_html, write_html
from .png import save_heatmap
from .terminal import (
    attention_summary,
    breakdown_table,
    compare_table,
    head_flips,
    heads_table,
    preference_summary,
    top_table,
)

__all__ = [
    "notebook",
    "render_html",
    "write_html",
    "save_heatmap",
    "top_table",
    "breakdown_table",
    "heads_table",
    "compare_table",
    "head_flips",
    "preference_summary",
    "attention_summary",
]
