"""The built site: every page there, every link resolves offline, the tutorial ran, the API pages rendered."""

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("check_site", ROOT / "tools" / "check_site.py")
check_site = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_site)

pytestmark = pytest.mark.slow
EXEC_BLOCK = re.compile(r"^```python[ \t]*$", re.M)


def nav_pages() -> list[str]:
    """Every ``.md`` named in mkdocs.yml's nav."""
    return re.findall(r":?\s([\w/.-]+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(encoding="utf-8"), re.M)


def test_every_link_resolves_and_nothing_loads_from_outside(site):
    problems, pages, links = check_site.check_site(site)
    assert problems == []
    assert pages >= len(nav_pages()) and links > 1000


def test_every_page_of_the_nav_is_built(site):
    pages = nav_pages()
    assert "tutorial.md" in pages and "reference/lens.md" in pages and len(pages) >= 25
    for md in pages:
        assert (site / md.replace(".md", ".html")).is_file(), md


def test_the_tutorial_ran_every_block_and_drew_its_figures(site):
    source = (ROOT / "docs" / "tutorial.md").read_text(encoding="utf-8")
    page = (site / "tutorial.html").read_text(encoding="utf-8")
    blocks = len(EXEC_BLOCK.findall(source))
    assert blocks >= 15
    outputs = page.count('<span class="filename">output</span>')
    assert outputs >= blocks - 3  # a block that only computes or asserts shows no output
    assert "Traceback" not in page and "Error" not in re.sub(r"ValueError as e", "", page.split("8. For readers")[0])
    figures = re.findall(r'<img alt="([^"]+)" class="qkv-figure" src="(figures/[\w.-]+\.png)"', page)
    assert len(figures) >= 2
    for alt, src in figures:
        assert (site / src).read_bytes()[:4] == b"\x89PNG" and alt.strip()
    assert "layer 5, head 11" in page  # the head the lens chooses for "it" -> cat over mat


def test_the_tutorial_numbers_are_computed_not_typed(site):
    page = (site / "tutorial.html").read_text(encoding="utf-8")
    assert re.search(r"max \|steps\.weights - model(&#39;|')s weights\| = 0\.0\n", page)  # steps = the model's head
    assert re.search(r"fitted slope (0\.9\d\d|1\.0\d\d)", page)
    assert "became [UNK]" in page and "bert-base-chinese" in page


def test_api_pages_render_the_docstrings(site):
    for name, objects in {
        "attention": ["qkv.core.functional.attention", "qkv.core.merging.merge"],
        "lens": ["qkv.lens.trace.Trace", "qkv.lens.heads.choose_head"],
        "masks": ["qkv.masks"],
        "claims": ["qkv.claims"],
        "steps": ["softmax_weights"],
        "hf": ["qkv.hf", "qkv.hf.wrap", "qkv.lens.hf_adapter.TransformersAdapter"],
        "probe": [
            "qkv.lens.probing.probe",
            "qkv.lens.probing.ProbeResult.to_dict",
            "qkv.lens.probe_io.parse_items",
            "qkv.lens.stats.clopper_pearson",
        ],
        "serve": ["qkv.serve.app.create_app", "qkv.serve.schemas.ProbeRequest", "qkv.serve.limits.Limits"],
    }.items():
        page = (site / "reference" / f"{name}.html").read_text(encoding="utf-8")
        assert 'class="doc doc-object' in page, name
        for obj in objects:
            assert f'id="{obj}' in page or obj in page, (name, obj)
    attention = (site / "reference" / "attention.html").read_text(encoding="utf-8")
    assert "highlight" in attention and "&gt;&gt;&gt;" in attention  # doctests render as code, not prose
    assert ":func:" not in attention and ":class:" not in attention


def test_the_tutorial_runs_the_probe_and_says_what_it_found(site):
    page = (site / "tutorial.html").read_text(encoding="utf-8")
    assert "no-exec" not in page and "To be switched to the probe" not in page
    m = re.search(r"held-out best head: (\d+)% \[(\d+)%, (\d+)%\] \((\d+)/96 sentences\)", page)
    assert m and int(m.group(2)) < 50 < int(m.group(3)), m  # the paragraph: the interval contains chance
    assert "verdict: no better than chance" in page


def test_the_guides_of_the_merged_features_ran(site):
    probe = (site / "guides" / "probe.html").read_text(encoding="utf-8")
    assert "added by the" not in probe.lower() and "96 items, 0 skipped while reading" in probe
    assert re.search(r"held-out best head: +\d+\.\d% \[\d+\.\d%, \d+\.\d%\] \(\d+/96\)", probe)
    assert "baseline    first:" in probe and "permutation p = " in probe and "no better than chance" in probe
    assert "items[0]: field &#39;query&#39;: text[30:32]" in probe or "items[0]: field 'query': text[30:32]" in probe
    web = (site / "guides" / "web-app.html").read_text(encoding="utf-8")
    assert "added by the" not in web.lower() and 'src="../serve.png"' in web and (site / "serve.png").is_file()
    assert "same as qkv.lens.probe: True" in web and "POST /api/probe" in web
    assert "422 items[0]: missing field" in web and "at most 64 per request" in web
    hf = (site / "guides" / "transformers.html").read_text(encoding="utf-8")
    assert "added by the" not in hf.lower() and 'href="../notebooks/your_model.ipynb"' in hf
    assert (site / "notebooks" / "your_model.ipynb").is_file()
    m = re.search(r"max \|weights - native weights\| = ([0-9.e-]+)", hf)
    assert m and float(m.group(1)) < 1e-5, m


def test_the_tutorial_is_a_notebook_for_jupytext():
    jupytext = pytest.importorskip("jupytext")
    nb = jupytext.read(ROOT / "docs" / "tutorial.md")
    code = [c for c in nb.cells if c.cell_type == "code"]
    source = (ROOT / "docs" / "tutorial.md").read_text(encoding="utf-8")
    assert len(code) >= len(EXEC_BLOCK.findall(source))
    assert code[0].source.startswith("import torch\nimport qkv")


@pytest.mark.skipif(
    shutil.which("torchrun", path=os.path.dirname(sys.executable)) is None,
    reason="torchrun is not installed next to this Python",
)
def test_the_ring_example_runs_under_torchrun(tmp_path):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    done = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node", "2", str(ROOT / "docs" / "examples" / "ring_torchrun.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    m = re.search(r"2 ranks: max \|ring - single process\| = ([0-9.e+-]+)", done.stdout)
    assert m and float(m.group(1)) < 1e-5, done.stdout
