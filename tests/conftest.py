"""Shared test configuration: deterministic seeds, hypothesis profile, and the one headless Chromium.

Browser tests use the ``browser`` fixture. Without Chromium or Playwright they are skipped on a developer's
machine, but under CI (``CI`` set to anything but ``""``/``0``/``false``/``no``) they FAIL: CI never hides a
browser test behind a skip. ``QKV_CHROMIUM`` overrides the Chromium path (default ``/usr/bin/chromium``).
One sync Playwright serves the whole session (two cannot coexist in one thread).
"""

import os

import pytest
import torch
from hypothesis import settings

settings.register_profile("qkv", deadline=None, max_examples=40, derandomize=True)
settings.load_profile("qkv")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


#: The devices every device-parametrised test runs on: the CPU always, CUDA when present (bench/gpu_check.sh runs
#: the "cuda" cases on a lent GPU). The same test code runs on both.
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    """Each available device in turn (``cpu``; ``cuda`` when present): tests create their tensors on it."""
    return torch.device(request.param)


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


class CharTokenizer:
    """A minimal transformers-like tokenizer for tiny random models: one id per character (``3 + ord % 90``, so
    a vocabulary of 96 holds them), no offsets and no qkv-style ``encode(truncate=)``."""

    def __call__(self, text, **kw):
        ids = [3 + (ord(c) % 90) for c in text]
        return {"input_ids": ids, "special_tokens_mask": [0] * len(ids)}

    def convert_ids_to_tokens(self, ids):
        return [f"t{i}" for i in ids]


@pytest.fixture
def char_tokenizer():
    """A :class:`CharTokenizer` (tests of transformers models that qkv traces with a tokenizer of their own)."""
    return CharTokenizer()
