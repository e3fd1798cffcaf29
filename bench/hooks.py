"""What hook points cost: nothing measurable when no hook set is active.

Run: ``python -m bench.hooks [--repeat 20]``; writes ``bench/results/hooks.md``. Measures, in one process with
interleaved rounds: the check every attention call makes (``qkv.nn.hooks.wants`` with no hook set active, and
``qkv.nn.hooked.attend`` against a direct ``qkv.attention`` call on a tiny input, where call overhead shows), and a
MiniLM forward (8 x 128 tokens) with no hook set, with a hook set that matches no point (the fast path still
runs), and with a head-output hook on one layer (that layer runs its hook; the others stay fast).
"""

from __future__ import annotations

import argparse
import statistics
import time
import timeit
from pathlib import Path

import torch

import qkv
from qkv.models import load
from qkv.nn.hooked import attend
from qkv.nn.hooks import Hooks, hooks, wants

try:
    from bench.report import save
except ImportError:  # run as a script
    from report import save

RESULTS = Path(__file__).resolve().parent / "results" / "hooks.md"


def _ns(stmt, number: int = 20000) -> float:
    return min(timeit.repeat(stmt, number=number, repeat=5)) / number * 1e9


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--repeat", type=int, default=20)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    q = k = v = torch.randn(1, 2, 4, 8)
    check = _ns(lambda: wants("layers.0.attention"))
    direct = _ns(lambda: qkv.attention(q, k, v), 5000)
    through = _ns(lambda: attend("layers.0.attention", q, k, v), 5000)

    model = load("minilm")
    ids = torch.randint(1000, 5000, (8, 128))
    unrelated = Hooks().add("layers.99.attention.output", lambda t, n: None)

    def zero_head(t, n):
        t = t.clone()
        t[:, 3] = 0
        return t

    head = Hooks().add("layers.2.attention.output", zero_head)
    cases = {"no hook set": (), "a hook set matching no point": (unrelated,), "one head-output hook": (head,)}
    times: dict[str, list[float]] = {c: [] for c in cases}
    with torch.no_grad():
        for c, sets in cases.items():  # warm-up
            with hooks(*sets):
                model(ids)
        for _ in range(args.repeat):
            for c, sets in cases.items():
                with hooks(*sets):
                    t0 = time.perf_counter()
                    model(ids)
                    times[c].append(time.perf_counter() - t0)
    base = statistics.median(times["no hook set"])
    rows = "\n".join(
        f"| {c} | {statistics.median(ts) * 1e3:.1f} ms | {statistics.median(ts) / base:.3f}x |"
        for c, ts in times.items()
    )
    report = f"""# Hook points: cost (`python -m bench.hooks`)

torch {torch.__version__}, {torch.get_num_threads()} threads; medians of {args.repeat} interleaved rounds.

| per attention call | ns |
|---|---:|
| `wants(name)` with no hook set active (the only work the fast path adds) | {check:.0f} |
| `qkv.attention` on (1, 2, 4, 8) | {direct:.0f} |
| `qkv.nn.hooked.attend` on the same, no hook set (what models call) | {through:.0f} |

| MiniLM forward, 8 x 128 tokens | median | vs no hook set |
|---|---:|---:|
{rows}
"""
    save(report, RESULTS)


if __name__ == "__main__":
    main()
