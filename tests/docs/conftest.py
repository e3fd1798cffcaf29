"""The documentation site, built once per test session (``mkdocs build --strict``, as ``make docs`` does).

``QKV_DOCS_SITE=DIR`` checks an already built site instead (CI runs ``make docs`` first and passes ``site``).
Without mkdocs the docs tests skip -- except under ``CI=true``, where a missing build tool fails.
"""

import importlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _require(module: str) -> None:
    """Import ``module``; skip without it, but under ``CI=true`` a missing build tool fails."""
    if os.environ.get("CI") == "true":
        importlib.import_module(module)
    else:
        pytest.importorskip(module, reason=f"{module} is not installed (pip install -e '.[docs]')")


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> Path:
    """The built site's folder."""
    given = os.environ.get("QKV_DOCS_SITE")
    if given:
        path = Path(given) if Path(given).is_absolute() else ROOT / given
        assert (path / "index.html").is_file(), f"QKV_DOCS_SITE={given}: no index.html there (run make docs)"
        return path
    _require("mkdocs")
    out = tmp_path_factory.mktemp("site")
    env = {
        **os.environ,
        "NO_MKDOCS_2_WARNING": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"mkdocs build --strict failed:\n{done.stdout}\n{done.stderr}"
    print(f"docs built in {time.perf_counter() - start:.0f} s")
    return out
