"""The layering of DESIGN.md is enforced: import-linter keeps the real tree, and fails a deliberate back-import."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT = Path(sys.executable).parent / "lint-imports"

pytestmark = pytest.mark.skipif(not LINT.exists() and not os.environ.get("CI"), reason="import-linter not installed")


def _lint(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    return subprocess.run(
        [str(LINT), "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_tree_keeps_every_contract():
    r = _lint(ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "broken" in r.stdout and " 0 broken" in r.stdout


@pytest.mark.parametrize(
    "where,line",
    [
        ("core/lse.py", "from qkv import cli  # a deliberate back-import"),
        ("lens/heads.py", "import qkv.view.terminal  # a deliberate back-import"),
        ("distributed/plan.py", "import qkv.models  # ring attention must use the mechanism only"),
        # the CLI's former cycle (cli <-> cli_apps / cli_explain): a command module importing the entry point back
        ("cli/explain.py", "from qkv.cli import main  # a deliberate back-import of the entry point"),
        ("cli/apps.py", "def f():\n    from . import COMMANDS  # inside a function, still a back-import"),
        ("cli/_support.py", "from . import explain  # the support module importing a command"),
        ("cli/claims.py", "from .explain import run_explain  # one command module importing another"),
        ("lens/summary.py", "from qkv.view.terminal import top_table  # analysis must not import a view"),
    ],
)
def test_a_back_import_breaks_the_contracts(tmp_path, where, line):
    shutil.copytree(ROOT / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / "src" / "qkv" / where
    target.write_text(target.read_text(encoding="utf-8") + "\n" + line + "\n", encoding="utf-8")
    r = _lint(tmp_path)
    assert r.returncode != 0 and "BROKEN" in r.stdout.upper(), r.stdout[-3000:]
