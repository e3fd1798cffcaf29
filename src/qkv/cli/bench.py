"""``qkv bench``: the attention benchmark of a source checkout (``python -m bench``), options passed through."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import _support as s

__all__ = ["COMMAND", "bench_args", "run_bench", "bench_root"]


def bench_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "bench_args",
        nargs="*",
        metavar="ARG",
        help="arguments of the attention benchmark, passed through (`qkv bench --help` lists them)",
    )


def bench_root() -> Path:
    """The source checkout holding ``bench/`` (benchmarks are not part of the installed package)."""
    for root in (Path(__file__).resolve().parents[3], Path.cwd()):
        if (root / "bench" / "attention.py").is_file():
            return root
    raise ValueError(
        "qkv bench runs the benchmarks of a source checkout (bench/ is not installed); "
        "run it from the qkv repository or install qkv there with `pip install -e .`"
    )


def run_bench(args, console) -> int:
    import subprocess

    return subprocess.call([sys.executable, "-m", "bench", *args.bench_args], cwd=bench_root())


COMMAND = s.Command(
    "benchmark qkv's attention against its peers (python -m bench in the source checkout)", bench_args, run_bench
)
