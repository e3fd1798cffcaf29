"""The example notebook, executed headless (nbclient + ipykernel): it displays traces with no network references."""

import json
import os
import re
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[2] / "docs" / "notebooks" / "your_model.ipynb"


def test_the_example_notebook_runs_and_displays_self_contained_traces():
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    env_path = os.pathsep.join(filter(None, [str(NOTEBOOK.parents[2] / "src"), os.environ.get("PYTHONPATH")]))
    os.environ["PYTHONPATH"] = env_path  # the kernel (a subprocess) imports this checkout's qkv
    nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    ).execute()
    htmls = [
        o["data"]["text/html"]
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if "data" in o and "text/html" in o["data"]
    ]
    assert len(htmls) == 2, f"expected two displayed traces, got {len(htmls)}"
    for page in htmls:
        assert page.startswith("<iframe srcdoc=") and 'sandbox="allow-scripts"' in page
        assert "qkv-data" in page  # the embedded trace
    shown = json.dumps(
        [
            o.get("data")
            for c in nb.cells
            if c.cell_type == "code"
            for o in c.get("outputs", [])
            if o["output_type"] in ("display_data", "execute_result")
        ]
    )
    assert not re.search(r"https?://", shown), "a displayed output references the network"
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert not errors, errors


def test_repr_html_sandboxes_each_trace_and_reports_pages_too_large():
    import torch

    from qkv.lens.trace import Trace
    from qkv.view import html as page_module

    a = Trace.from_tensors("a </script> b", ["a", "</script>", "b"], weights=torch.full((1, 2, 3, 3), 1 / 3))
    cell = a._repr_html_()
    assert cell.startswith("<iframe srcdoc=") and cell.count("<script") == 0  # the page is escaped inside srcdoc
    assert "&lt;/script&gt;" in cell
    big = Trace.from_tensors("x " * 4, ["x"] * 4, weights=torch.full((1, 1, 4, 4), 0.25))
    limit = page_module.MAX_NUMBERS
    page_module.MAX_NUMBERS = 10
    try:
        assert big._repr_html_().startswith("<pre>") and "shorten the text" in big._repr_html_()
    finally:
        page_module.MAX_NUMBERS = limit
