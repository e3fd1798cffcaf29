"""Traces for the view tests: MiniLM (loaded once per process) and a synthetic one; headless Chromium.

Browser tests use the ``browser`` fixture. Without Chromium or Playwright they are skipped on a developer's
machine, but under CI (``CI`` set to anything but ``""``/``0``/``false``/``no``) they FAIL: CI never hides a
browser test behind a skip. ``QKV_CHROMIUM`` overrides the Chromium path (default ``/usr/bin/chromium``).
"""

import os

import pytest
import torch

SENTENCE = "The cat sat on the mat because it was tired."
XSS = 'The cat </script><script>window.__pwned = 1</script> sat on <img src=x onerror="window.__pwned = 2"> it.'


@pytest.fixture(scope="session")
def cat_trace():
    import qkv

    return qkv.trace(SENTENCE)


@pytest.fixture(scope="session")
def xss_trace():
    import qkv

    return qkv.trace(XSS)


@pytest.fixture
def tiny_trace():
    """Three tokens, one layer, two heads: 'it' (row 2) prefers 'cat' in head 0 and 'mat' in head 1."""
    from qkv.lens.trace import Trace

    w = torch.tensor(
        [[[[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.6, 0.3, 0.1]], [[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.1, 0.7, 0.2]]]]
    )  # (N=1, H=2, L=3, L=3)
    return Trace.from_tensors("cat mat it", ["cat", "mat", "it"], weights=w, offsets=[(0, 3), (4, 7), (8, 10)])


CHROMIUM_DEFAULT = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def skip_or_fail(reason: str):
    """Skip a browser test for ``reason`` -- or fail it under CI, where a skipped browser test hides a regression."""
    if in_ci():
        pytest.fail(
            f"CI is set but the browser test cannot run: {reason}; install Chromium with `make browser` "
            "(Debian's chromium package) and Playwright (pip install -c constraints.txt playwright)",
            pytrace=False,
        )
    pytest.skip(reason)


@pytest.fixture(scope="session")
def browser():
    """A headless Chromium (Debian's, through Playwright), shared by every browser test of the session."""
    chromium = os.environ.get("QKV_CHROMIUM", CHROMIUM_DEFAULT)
    if not os.path.exists(chromium):
        skip_or_fail(f"{chromium} is absent (make browser installs it)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as e:
        skip_or_fail(f"playwright is not installed ({e})")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield b
        b.close()
