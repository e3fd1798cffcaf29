"""Start-up: ``qkv explain`` (the whole command on the embedded default model) against a bare ``import torch``.

Both run as fresh processes, interleaved round by round (background load hits both alike); medians of wall
time. The target of speed round two: ``qkv explain`` within 1.3x of ``python -c "import torch"`` -- everything
qkv adds (its own imports, loading MiniLM from safetensors, tokenizing, one traced forward, the terminal
table) costs less than a third of what importing PyTorch costs.

Run: ``python -m bench.startup [--rounds 7]``; writes ``bench/results/startup.md``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

try:
    from bench.report import save
except ImportError:  # run as a script (python bench/NAME.py): bench/ itself is on sys.path
    from report import save

__all__ = ["run", "main"]

RESULTS = Path(__file__).resolve().parent / "results" / "startup.md"
COMMANDS = {
    "python -c 'import torch'": [sys.executable, "-c", "import torch"],
    "qkv explain": [sys.executable, "-m", "qkv", "explain"],
}


def _once(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ})
    return time.perf_counter() - t


def run(rounds: int = 7) -> str:
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for r in range(rounds + 1):  # round 0 warms the page cache
        for name, cmd in COMMANDS.items():
            dt = _once(cmd)
            if r:
                times[name].append(dt)
    med = {name: statistics.median(v) for name, v in times.items()}
    base = med["python -c 'import torch'"]
    lines = [
        "# Start-up: `qkv explain` vs a bare `import torch`",
        "",
        f"- {rounds} interleaved rounds of fresh processes after one warm-up round; medians; load "
        f"{os.getloadavg()[0]:.1f} at the end; command: `python -m bench.startup --rounds {rounds}`",
        "",
        "| command | median s | vs import torch |",
        "|---|---:|---:|",
    ]
    lines += [f"| `{name}` | {t:.2f} | {t / base:.2f}× |" for name, t in med.items()]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    report = run(args.rounds)
    save(report, args.out)


if __name__ == "__main__":
    main()
