"""`make browser`: apt waits for the dpkg lock, and under CI a failed Chromium install fails the target."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAKE = shutil.which("make")
pytestmark = pytest.mark.skipif(MAKE is None, reason="make is not installed")


def make_browser(tmp_path, ci):
    """Run the target with PATH holding only a failing apt-get stub (so no chromium is found, nothing installs)."""
    stub = tmp_path / "bin"
    stub.mkdir()
    (stub / "apt-get").write_text(
        '#!/bin/sh\necho "apt-get $*" >> "$0.log"\necho "E: Could not get lock" >&2\nexit 100\n'
    )
    (stub / "apt-get").chmod(0o755)
    env = {"PATH": str(stub), "HOME": str(tmp_path)}
    if ci is not None:
        env["CI"] = ci
    r = subprocess.run(
        [MAKE, "-s", "--no-print-directory", "browser"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    return r, (stub / "apt-get.log").read_text()


def test_ci_fails_when_chromium_cannot_be_installed(tmp_path):
    r, calls = make_browser(tmp_path, "true")
    assert r.returncode != 0
    assert "ERROR: CI is set and chromium could not be installed" in r.stderr
    assert "-o DPkg::Lock::Timeout=600 update" in calls  # waits for another apt instead of failing at once


@pytest.mark.parametrize("ci", [None, "false"])
def test_elsewhere_it_warns(tmp_path, ci):
    r, _ = make_browser(tmp_path, ci)
    assert r.returncode == 0 and "WARNING: could not install chromium" in r.stdout
