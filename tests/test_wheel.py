"""Nothing is missing from the package: build the wheel, install it into a fresh venv, run ``qkv explain --html``
from there (issue 11).

No downloads: the wheel is built with ``pip wheel --no-deps --no-build-isolation`` (this environment's setuptools),
the fresh venv gets the wheel with ``--no-deps``, and sees this environment's site-packages (torch, tokenizers,
the embedded MiniLM...) through a ``.pth`` line -- appended after its own site-packages, and without running
that directory's ``.pth`` files, so a development (editable) install of qkv there is not picked up. The test
checks that the imported qkv is the installed one, run from an empty directory.
"""

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "qkv"


def _run(cmd, **kw) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "MYPYPATH")}
    env.update(PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1", COLUMNS="120", NO_COLOR="1")
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600, env=env, **kw)
    assert r.returncode == 0, f"{cmd} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def _package_files() -> set[str]:
    """Every file of the package in the source tree that is tracked or would be (not ignored), as wheel paths."""
    out = _run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "src/qkv"], cwd=ROOT).stdout
    return {line[len("src/") :] for line in out.splitlines() if line and (ROOT / line).is_file()}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built from a clean copy of the project (no stale build/ or egg-info, nothing left behind)."""
    src = tmp_path_factory.mktemp("project")
    for name in ("pyproject.toml", "README.md", "LICENSE", "MANIFEST.in", "setup.py", "setup.cfg"):
        if (ROOT / name).is_file():
            shutil.copy2(ROOT / name, src / name)
    for rel in _package_files():
        (src / "src" / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / "src" / rel, src / "src" / rel)
    out = tmp_path_factory.mktemp("dist")
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", out, src],
        cwd=src,
    )
    (whl,) = out.glob("qkv-*.whl")
    return whl


def test_wheel_holds_every_file_of_the_package(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = sorted(_package_files() - names)
    assert not missing, f"files of src/qkv that the wheel lacks (add them to package-data): {missing}"
    extra = sorted(n for n in names - _package_files() if not n.startswith("qkv-"))  # qkv-0.1.0.dist-info/
    assert not extra, f"the wheel holds files that are not in src/qkv: {extra}"
    assert any(n.endswith("entry_points.txt") for n in names)


def test_installed_wheel_runs_qkv_explain_html(wheel, tmp_path):
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    py = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", py, "install", "--no-deps", "--no-index", wheel])
    site = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    (site / "zz_shared_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # torch & co., appended

    work = tmp_path / "cwd"
    work.mkdir()
    where = _run([py, "-c", "import qkv; print(qkv.__file__)"], cwd=work).stdout.strip()
    assert Path(where).resolve().is_relative_to(site.resolve()), f"imported {where}, not the installed wheel"
    assert (Path(where).parent / "py.typed").is_file(), "the installed package lacks its py.typed marker"
    r = _run([venv / "bin" / "qkv", "explain", "--html", "out.html"], cwd=work)
    assert "wrote out.html" in r.stdout
    page = (work / "out.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and 'id="qkv-data"' in page and "http://" not in page
    assert len(page) > 100_000  # the trace of the default sentence is embedded


# A user's script: qkv's public functions with the types a user's checker must see (assert_type fails on Any).
USER_SCRIPT = """\
from typing_extensions import assert_type

import torch

import qkv
from qkv import masks
from qkv.lens import Attended, Trace

q = torch.randn(1, 2, 5, 8)
out = qkv.attention(q, q, q, mask=masks.causal() & masks.padding([4]))
assert_type(out, torch.Tensor)
out, lse = qkv.attention(q, q, q, mask=masks.sliding_window(2), return_lse=True)
assert_type(lse, torch.Tensor)
t = qkv.trace("The cat sat on the mat because it was tired.")
assert_type(t, Trace)
assert_type(qkv.trace(["The cat sat.", "It was tired."]), list[Trace])
top = t.top("it", k=3)
assert_type(top, list[Attended])
best: str = top[0].token
"""
# the same script with one deliberate type error: Trace.top's k is an int
WRONG_LINE = 'top = t.top("it", k="3")'


def _mypy_user_script(py: Path, work: Path, script: str) -> subprocess.CompletedProcess:
    """mypy (this environment's) on ``script`` against what interpreter ``py`` imports, with mypy's defaults."""
    (work / "user.py").write_text(script, encoding="utf-8")
    (work / "mypy.ini").write_text("[mypy]\n", encoding="utf-8")  # not the project's configuration
    cmd = [sys.executable, "-m", "mypy", "--python-executable", py, "--config-file", "mypy.ini", "-v", "user.py"]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "MYPYPATH")}
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=900, env=env, cwd=work)


def test_user_script_type_checks_against_the_installed_wheel(wheel, tmp_path):
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    py = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", py, "install", "--no-deps", "--no-index", wheel])
    site = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    (site / "zz_shared_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # torch & co., appended
    work = tmp_path / "cwd"
    work.mkdir()

    good = _mypy_user_script(py, work, USER_SCRIPT)
    assert good.returncode == 0, f"mypy rejects a correct user script:\n{good.stdout[-3000:]}\n{good.stderr[-2000:]}"
    parsed = re.search(r"Parsing (\S+) \(qkv\)", good.stderr)
    assert parsed, f"mypy did not read qkv:\n{good.stderr[-2000:]}"
    assert Path(parsed.group(1)).resolve().is_relative_to(site.resolve()), f"mypy read {parsed.group(1)}, not the wheel"

    wrong = USER_SCRIPT.replace('top = t.top("it", k=3)', WRONG_LINE)
    assert wrong != USER_SCRIPT
    bad = _mypy_user_script(py, work, wrong)
    assert bad.returncode == 1, f"mypy accepts a script with a type error:\n{bad.stdout[-3000:]}"
    line = wrong.splitlines().index(WRONG_LINE) + 1
    assert f"user.py:{line}: error:" in bad.stdout and "[arg-type]" in bad.stdout, bad.stdout[-3000:]
