"""The attention benchmark: qkv's implementations vs torch SDPA, naive, FlexAttention, on CPU.

Run ``python -m bench`` (or ``qkv bench``); ``--quick`` for a short run, ``--n``/``--case``/``--mode``
for a subset. Writes ``bench/results/attention.json`` and ``bench/results/attention.md``.

Method. Every case ``(mask, N, fwd | fwd+bwd)`` runs in its own process. Inside it, every
contender (and a GEMM that measures the machine's ceiling) is timed once per round, over several
rounds (interleaved, so that background load hits all of them alike, in a new seeded order every round,
so that no contender always follows the cache-evicting GEMM); the first round is a warm-up
(its time, minus the median, is FlexAttention's compile time). Reported: median ms, effective
GFLOP/s (``4 * B * H * D`` per attended pair forward; ``2.5x`` that more for the backward),
fraction of the GEMM ceiling, for block-sparse cases the rate per attended pair as a fraction of dense
SDPA's (no mask, N <= ``DENSE_N``, timed in the same rounds), peak RSS of the process while the contender
ran (``VmHWM`` reset before it), and the largest difference of its output from qkv's tiled output.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

__all__ = ["main", "run_case"]

RESULTS = Path(__file__).resolve().parent / "results"
SIZES = [1024, 4096, 16384]
#: Dense SDPA (no mask) is timed at min(N, DENSE_N) beside block-sparse cases: its rate per pair is flat in N
#: (148-155 GFLOP/s for N = 1024..16384 in bench/results/attention.md) and N = 16384 would cost 4-13 s a round.
DENSE_N = 4096


# ------------------------------------------------------------------------------ inside a case process
def _rss_mb(field: str = "VmHWM") -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:  # pragma: no cover - not Linux
        pass


def run_case(
    case: str, n: int, mode: str, rounds: int, budget_s: float, mem_gb: float, flex: bool, only: list[str] | None = None
) -> dict:
    """Time every contender of one case in this process; return the JSON-able result."""
    from bench.attention_cases import B, D, H, attended_pairs, contenders

    torch.manual_seed(0)
    grad = mode == "fwdbwd"
    q, k, v = (torch.randn(B, H, n, D) for _ in range(3))
    dout = torch.randn(B, H, n, D)
    table = contenders(case, n, mode, mem_gb * 2**30, flex)
    note = table.pop("_dense_note")
    if only:
        table = {name: fn for name, fn in table.items() if name in only}
    runnable = {name: fn for name, fn in table.items() if callable(fn)}
    leaves = [t.requires_grad_(grad) for t in (q, k, v)]

    def call(fn):
        out = fn(*leaves)
        if grad:
            out.backward(dout)
            for t in leaves:
                t.grad = None
        return out

    a = torch.randn(2048, 2048)
    gemm = lambda: a @ a  # noqa: E731 - the machine's fp32 GEMM ceiling, timed in every round
    refs = {"gemm": gemm}
    nd = min(n, DENSE_N)
    if case not in ("full", "causal"):  # block-sparse: the rate SDPA's fused kernel reaches on dense pairs
        dq, dk, dv = (torch.randn(B, H, nd, D, requires_grad=grad) for _ in range(3))
        ddout = torch.randn(B, H, nd, D)

        def dense_sdpa():
            out = torch.nn.functional.scaled_dot_product_attention(dq, dk, dv)
            if grad:
                out.backward(ddout)
                for t in (dq, dk, dv):
                    t.grad = None
            return out.detach()

        refs["dense sdpa"] = dense_sdpa
    times: dict[str, list[float]] = {name: [] for name in [*runnable, *refs]}
    first: dict[str, float] = {}
    peak: dict[str, float] = {}
    extra: dict[str, float] = {}
    err: dict[str, float] = {}
    check = None
    start = time.perf_counter()
    order = [*runnable.items(), *refs.items()]
    shuffle = random.Random(0)
    for r in range(rounds + 1):
        # A new order every round (seeded): a contender that always ran right after the 2048^3 GEMM, which
        # evicts the caches, would pay for it in every round (measured: 0.4-0.9 ms of 7.5 at N = 1,024).
        for name, fn in order if r == 0 else shuffle.sample(order, len(order)):
            base = _rss_mb("VmRSS")
            _reset_peak()
            t0 = time.perf_counter()
            out = call(fn) if name not in refs else fn()
            dt = time.perf_counter() - t0
            hwm = _rss_mb()
            peak[name], extra[name] = max(peak.get(name, 0), hwm), max(extra.get(name, 0), hwm - base)
            if r == 0:
                first[name] = dt
                if name not in refs:
                    out = out.detach()
                    if check is None and name == "qkv tiled":
                        check = out
                    if check is not None:
                        err[name] = float((out - check).abs().max())
                    print(f"    {name:17s} first call {dt * 1e3:9.1f} ms", file=sys.stderr, flush=True)
            else:
                times[name].append(dt)
            del out
        if r >= 2 and time.perf_counter() - start > budget_s:
            break
    while len(times["gemm"]) < 3:  # a steady ceiling even when the contenders ran only once
        t0 = time.perf_counter()
        gemm()
        times["gemm"].append(time.perf_counter() - t0)
    pairs = attended_pairs(case, n)
    flops = 4.0 * B * H * D * pairs * (3.5 if grad else 1.0)
    gemm_ms = statistics.median(times["gemm"] or [first["gemm"]]) * 1e3
    gemm_gflops = 2 * 2048**3 / gemm_ms / 1e6
    dense_gflops = None
    if "dense sdpa" in refs:
        dense_ms = statistics.median(times["dense sdpa"] or [first["dense sdpa"]]) * 1e3
        dense_gflops = 4.0 * B * H * D * nd * nd * (3.5 if grad else 1.0) / dense_ms / 1e6
    rows = {}
    for name, fn in table.items():
        if not callable(fn):
            rows[name] = {"skipped": fn.removeprefix("skipped: ")}
            continue
        ts = times[name] or [first[name]]
        ms = statistics.median(ts) * 1e3
        rows[name] = {
            "ms": ms,
            "runs": len(ts),
            "gflops": flops / ms / 1e6,
            "gemm_fraction": flops / ms / 1e6 / gemm_gflops,
            "peak_rss_mb": peak[name],
            "extra_rss_mb": extra[name],
            "first_ms": first[name] * 1e3,
            "max_abs_diff": err.get(name),
            "dense_fraction": None if dense_gflops is None else flops / ms / 1e6 / dense_gflops,
        }
        if name == "flex compiled":
            rows[name]["compile_s"] = max(first[name] - ms / 1e3, 0.0)
    from bench.attention_cases import make_case
    from qkv.core import check_inputs, registry

    mask, mod = make_case(case, n)
    chosen = registry.select("auto", check_inputs(q, k, v, mask=mask, score_mod=mod)).name
    return {
        "case": case,
        "n": n,
        "mode": mode,
        "B": B,
        "H": H,
        "D": D,
        "pairs": pairs,
        "flops": flops,
        "gemm_gflops": gemm_gflops,
        "dense_sdpa_gflops": dense_gflops,
        "dense_sdpa_n": nd if dense_gflops else None,
        "load_avg": os.getloadavg()[0],
        "auto_impl": chosen,
        "dense_mask": note,
        "contenders": rows,
    }


# ------------------------------------------------------------------------------ the orchestrator
def _spawn(spec: dict, timeout: float) -> dict:
    cmd = [sys.executable, "-m", "bench.attention", "--worker", json.dumps(spec)]
    root = Path(__file__).resolve().parent.parent
    path = [str(root), str(root / "src"), os.environ.get("PYTHONPATH", "")]  # this checkout's qkv first
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in path if p))
    try:
        proc = subprocess.run(cmd, cwd=root, env=env, stdout=subprocess.PIPE, timeout=timeout, text=True)
    except subprocess.TimeoutExpired:
        return {**spec, "error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        return {**spec, "error": f"case process exited with {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def machine() -> dict:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "load_avg_start": os.getloadavg(),
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m bench`` / ``qkv bench``: run the matrix (or a subset), write JSON and markdown."""
    from bench.attention_cases import CASES
    from bench.attention_report import write_report

    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="N in {1024, 4096}, 3 rounds, no FlexAttention")
    ap.add_argument("--n", type=int, nargs="+", help=f"sizes (default {SIZES})")
    ap.add_argument("--case", nargs="+", choices=CASES, help="cases (default: all)")
    ap.add_argument("--mode", nargs="+", choices=["fwd", "fwdbwd"], default=["fwd", "fwdbwd"])
    ap.add_argument("--rounds", type=int, default=None, help="timed rounds per case (default 5, quick 3)")
    ap.add_argument("--budget", type=float, default=300.0, help="seconds per case after which rounds stop (>= 2)")
    ap.add_argument("--mem-gb", type=float, default=6.0, help="skip contenders needing more memory than this")
    ap.add_argument("--no-flex", action="store_true", help="skip FlexAttention (torch.compile takes ~1 min/case)")
    ap.add_argument("--long", action="store_true", help="also run causal fwd+bwd at N=65536 (qkv only; RSS target)")
    ap.add_argument("--only-long", action="store_true", help="run just the N=65536 case")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds before a case process is killed")
    ap.add_argument("--out", type=Path, default=RESULTS, help="directory for attention.json / attention.md")
    ap.add_argument("--small", action="store_true", help="only time reference vs tiled on small problems")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        spec = json.loads(args.worker)
        print(json.dumps(run_case(**spec)), flush=True)
        return 0
    if args.small:
        from bench.attention_small import run_small

        info = machine()
        small = run_small()
        json_path, md_path = write_report([], info, args.out, merge=True, small=small)
        print(f"wrote {json_path} and {md_path}", file=sys.stderr)
        return 0
    sizes = args.n or ([1024, 4096] if args.quick else SIZES)
    rounds = args.rounds or (3 if args.quick else 5)
    flex = not (args.no_flex or args.quick)
    specs = [
        dict(case=c, n=n, mode=m, rounds=rounds, budget_s=args.budget, mem_gb=args.mem_gb, flex=flex)
        for n in sizes
        for c in (args.case or CASES)
        for m in args.mode
    ]
    if args.only_long:
        specs = []
    if args.long or args.only_long:
        specs.append(
            dict(
                case="causal",
                n=65536,
                mode="fwdbwd",
                rounds=0,
                budget_s=0,
                mem_gb=args.mem_gb,
                flex=False,
                only=["qkv auto", "qkv tiled"],
            )
        )
    info = machine()
    print(
        f"bench: {len(specs)} cases, torch {info['torch']}, {info['threads']} threads, "
        f"load {info['load_avg_start'][0]:.1f}",
        file=sys.stderr,
        flush=True,
    )
    results = []
    for i, spec in enumerate(specs, 1):
        t0 = time.perf_counter()
        print(f"[{i}/{len(specs)}] {spec['case']} N={spec['n']} {spec['mode']}", file=sys.stderr, flush=True)
        res = _spawn(spec, args.timeout)
        results.append(res)
        auto = res.get("contenders", {}).get("qkv auto", {})
        print(
            f"  done in {time.perf_counter() - t0:.0f} s: qkv auto {auto.get('ms', float('nan')):.1f} ms "
            f"{res.get('error', '')}",
            file=sys.stderr,
            flush=True,
        )
    info["load_avg_end"] = os.getloadavg()
    json_path, md_path = write_report(results, info, args.out, merge=bool(args.n or args.case or args.only_long))
    print(f"wrote {json_path} and {md_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
