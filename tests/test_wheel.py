"""Nothing is missing from the package: build the wheel, install it into a fresh venv, run ``qkv explain --html``
from there (issue 11).

No downloads: the wheel is built with ``pip wheel --no-deps --no-build-isolation`` (this environment's setuptools),
the fresh venv gets the wheel with ``--no-deps``, and sees this environment's site-packages (torch, tokenizers,
the embedded MiniLM...) through a ``.pth`` line -- appended after its own site-packages, and without running
that directory's ``.pth`` files, so a development (editable) install of qkv there is not picked up. The test
checks that the imported qkv is the installed one, run from an empty directory.
"""

import os
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
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
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
    r = _run([venv / "bin" / "qkv", "explain", "--html", "out.html"], cwd=work)
    assert "wrote out.html" in r.stdout
    page = (work / "out.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and 'id="qkv-data"' in page and "http://" not in page
    assert len(page) > 100_000  # the trace of the default sentence is embedded
