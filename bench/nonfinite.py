"""The cost of the NaN/inf rule (:mod:`qkv.core.nonfinite`) in the forward, on bench's shapes (B=1, H=8, D=64, fp32).

Per case, interleaved round by round (background load hits all alike), median and min in ms:

* ``engine`` -- the engine ``auto`` picks, alone;
* ``before`` -- what qkv did before issue 22 on finite inputs: the engine, then one ``isfinite(sum(out))`` when
  a mask is given (that check missed the exceptions issue 22 lists);
* ``now`` -- :func:`qkv.core.nonfinite.attend` on finite inputs: one summing pass over q, k, v, then the engine;
* ``check`` -- that summing pass alone;
* ``rule`` -- :func:`qkv.core.nonfinite.attend_with_rule` on finite inputs: the branch-free form ``torch.compile``
  traces (and eager runs for non-finite inputs);
* ``rule NaN`` -- a call with one NaN in q (eager takes the rule).

Run: ``python -m bench.nonfinite [--n 4096] [--rounds 9] [--threads 1]``; prints a markdown table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

import qkv
from qkv.core import nonfinite, registry
from qkv.core.inputs import check_inputs

__all__ = ["run", "main"]

B, H, D = 1, 8, 64


def _cases(n: int) -> dict:
    return {
        "full": None,
        "window": qkv.masks.sliding_window(256),
        "document": qkv.masks.document(torch.arange(n) // max(n // 8, 1)),
    }


def run(n: int, rounds: int) -> list[str]:
    """Markdown rows ``| case | engine | name: median / min ms ... |`` for sequence length ``n``."""
    rows = []
    for case, mask in _cases(n).items():
        g = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(B, H, n, D, generator=g) for _ in range(3))
        inp = check_inputs(q, k, v, mask=mask)
        engine = registry.select("auto", inp)
        q_nan = q.clone()
        q_nan[0, 0, 5, 0] = float("nan")
        inp_nan = check_inputs(q_nan, k, v, mask=mask)

        def before(inp=inp, mask=mask, engine=engine):
            out, _ = engine.forward(inp)
            if mask is not None:
                bool(torch.isfinite(out.detach().sum()))

        contenders = {
            "engine": lambda inp=inp, engine=engine: engine.forward(inp),
            "before": before,
            "now": lambda inp=inp, engine=engine: nonfinite.attend(engine.forward, inp),
            "check": lambda inp=inp: nonfinite.all_finite(inp),
            "rule": lambda inp=inp, engine=engine: nonfinite.attend_with_rule(engine.forward, inp),
            "rule NaN": lambda inp=inp_nan, engine=engine: nonfinite.attend(engine.forward, inp),
        }
        times = {name: [] for name in contenders}
        for fn in contenders.values():
            fn()  # warm-up (plans, caches)
        for _ in range(rounds):
            for name, fn in contenders.items():
                start = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - start) * 1e3)
        med = {name: statistics.median(t) for name, t in times.items()}
        low = {name: min(t) for name, t in times.items()}
        cells = " | ".join(f"{med[x]:.2f} / {low[x]:.2f}" for x in contenders)
        rows.append(
            f"| {case} | {n} | {engine.name} | {cells} | {med['now'] / med['before']:.3f} | "
            f"{100 * low['check'] / low['engine']:.1f} % | {low['rule'] / low['engine']:.2f}x |"
        )
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[4096])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, {a.threads} thread(s), load {os.getloadavg()[0]:.1f}; ms: median / min")
    print(
        "| case | N | engine | engine | before | now | check | rule | rule NaN | now/before (median) "
        "| check/engine (min) | rule/engine (min) |"
    )
    print("|---" * 12 + "|")
    for n in a.n:
        for row in run(n, a.rounds):
            print(row, flush=True)


if __name__ == "__main__":
    main()
