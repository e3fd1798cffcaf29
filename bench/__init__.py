"""Benchmarks of qkv (run from the repository root).

``python -m bench`` (also ``qkv bench``) runs the attention matrix of :mod:`bench.attention`;
``bench/models.py`` and ``bench/ring.py`` are separate scripts.
"""

from __future__ import annotations

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """The attention benchmark's command line (``python -m bench --help``); returns an exit code."""
    from bench.attention import main as run

    return run(argv)
