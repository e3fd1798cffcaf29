"""Writing a benchmark's markdown report: the one way every ``bench/`` script saves and shows its result."""

from __future__ import annotations

from pathlib import Path

__all__ = ["save"]


def save(report: str, out: Path) -> None:
    """Write ``report`` to ``out`` (creating its folder), print it and say where it went."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    print(report)
    print(f"written to {out}")
