"""The build-time runner of the docs' Python blocks: output, figures, and failures that stop the build."""

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import pytest

defaults = pytest.importorskip("mkdocs.config.defaults")
PluginError = pytest.importorskip("mkdocs.exceptions").PluginError

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("mkdocs_exec", ROOT / "tools" / "mkdocs_exec.py")
hook = importlib.util.module_from_spec(spec)
spec.loader.exec_module(hook)


def render(markdown: str, execute: bool = True, src_uri: str = "guides/page.md", tmp_path=None):
    (tmp_path / "docs").mkdir(exist_ok=True)
    config = defaults.MkDocsConfig(config_file_path=str(tmp_path / "mkdocs.yml"))
    config.load_dict({"site_name": "t", "docs_dir": str(tmp_path / "docs"), "site_dir": str(tmp_path / "site")})
    assert config.validate() == ([], [])
    config.plugins._current_plugin = None  # mkdocs sets it while it runs an event (File.generated reads it)
    page = SimpleNamespace(meta={"execute": execute}, file=SimpleNamespace(src_uri=src_uri))
    files = []
    hook.on_config(config)
    return hook.on_page_markdown(markdown, page, config, files), files


def test_blocks_share_a_namespace_and_show_prints_and_the_last_value(tmp_path):
    md = "intro\n\n```python\nx = 6\nprint('x is', x)\n```\n\ntext\n\n```python\nx * 7\n```\n"
    out, files = render(md, tmp_path=tmp_path)
    assert out.count('```text title="output"') == 2
    assert "x is 6" in out and "\n42\n" in out and files == []


def test_no_exec_blocks_and_pages_without_execute_are_shown_not_run(tmp_path):
    md = "```python no-exec\nraise SystemExit\n```\n"
    out, _ = render(md, tmp_path=tmp_path)
    assert out == "```python\nraise SystemExit\n```\n"
    out, _ = render("```python\nraise SystemExit\n```\n", execute=False, tmp_path=tmp_path)
    assert "output" not in out


def test_figures_become_pngs_of_the_site_beside_the_page(tmp_path):
    md = (
        "```python\nimport matplotlib.pyplot as plt\nfig, ax = plt.subplots()\nax.plot([1, 2])\n"
        "ax.set_title('a line')\n```\n"
    )
    out, files = render(md, tmp_path=tmp_path)
    assert "![a line](figures/page-1.png){ .qkv-figure }" in out and "Line2D" not in out
    assert [f.src_uri for f in files] == ["guides/figures/page-1.png"]
    assert files[0].content_bytes[:4] == b"\x89PNG"


def test_an_error_stops_the_build_naming_the_page_and_line(tmp_path):
    where = r"(?s)guides/page.md, the python block at line 3 raised:\n.*ZeroDivisionError"
    with pytest.raises(PluginError, match=where):
        render("text\n\n```python\n1 / 0\n```\n", tmp_path=tmp_path)


def test_a_warning_stops_the_build(tmp_path):
    with pytest.raises(PluginError, match="warned: UserWarning: careful"):
        render("```python\nimport warnings\nwarnings.warn('careful')\n```\n", tmp_path=tmp_path)


def test_blocks_run_in_a_temporary_directory(tmp_path):
    code = "import os\nwith open('litter.txt', 'w') as f:\n    f.write('x')\nos.getcwd()\n"
    out, _ = render(f"```python\n{code}```\n", tmp_path=tmp_path)
    assert "qkv-docs-" in out and not (ROOT / "litter.txt").exists()


def test_sphinx_roles_lose_their_prefix_in_api_pages():
    html = "see :func:<code>attention</code> and :class:<code>Trace</code>, not :func: alone"
    expected = "see <code>attention</code> and <code>Trace</code>, not :func: alone"
    assert hook.on_page_content(html, None, None, None) == expected
