"""Ring attention on 2 and 4 local gloo processes vs one process: time and peak memory per rank.

Run: ``python bench/ring.py [--length 16384] [--impl auto] [--no-backward]``; writes ``bench/results/ring.md``.
By default two tables: ``impl="auto"`` (the tiled kernel) forward + backward with 4 heads, and
``impl="reference"`` (materialises the scores) forward only with 1 head.

Every configuration runs in fresh processes (``qkv.distributed.launch.spawn``), the single-process
baseline too, so that peak resident memory (``ru_maxrss``) is measured the same way everywhere.
Times are one run each (the first call, no warm-up): the point is per-rank memory and the
overhead of the ring, not a speed-up -- on a 2-core machine the ranks share the cores (4 ranks on
2 cores are oversubscribed twice). Every result is checked against the single-process one.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch

from qkv.core import check_inputs, registry
from qkv.distributed import launch
from qkv.distributed.demo import make_inputs, make_mask, ring_job, single_job
from qkv.distributed.plan import plan_ring
from qkv.distributed.sharding import local_length

__all__ = ["run", "main"]

RESULTS = Path(__file__).resolve().parent / "results" / "ring.md"


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    fin = torch.isfinite(b)
    return float((a.double() - b.double())[fin].abs().max()) if fin.any() else 0.0


def run(cfg: dict, worlds=(2, 4), layouts=("contiguous", "zigzag"), timeout: float = 1800.0) -> list[dict]:
    """Measure the single process and every (world size, layout); one row per run."""
    cores = os.cpu_count() or 1
    rows = []
    t0 = time.perf_counter()
    single = launch.spawn(single_job, 1, args=(cfg,), threads=cores, timeout=timeout)[0]
    print(f"single process: {time.perf_counter() - t0:.1f} s", flush=True)
    rows.append(
        dict(name="single process", world=1, layout="-", threads=cores, ranks=[single], diff=0.0, messages=0, work=None)
    )
    ref = single["tensors"]
    for world in worlds:
        for layout in layouts:
            c = {**cfg, "layout": layout}
            t0 = time.perf_counter()
            ranks = launch.spawn(
                ring_job, world, args=(c,), threads=max(1, cores // world), timeout=timeout, pg_timeout=timeout
            )
            print(f"ring W={world} {layout}: {time.perf_counter() - t0:.1f} s", flush=True)
            lengths = [local_length(cfg["length"], world, r, layout) for r in range(world)]
            plan = plan_ring(make_mask(cfg["mask"], cfg["length"]), lengths, lengths, layout)
            diff = max(_max_diff(x, y) for x, y in zip(ranks[0]["tensors"], ref))
            rows.append(
                dict(
                    name=f"ring, {world} processes",
                    world=world,
                    layout=layout,
                    threads=max(1, cores // world),
                    ranks=ranks,
                    diff=diff,
                    messages=plan.messages(),
                    work=[plan.work(r) for r in range(world)],
                )
            )
    return rows


def _mib(x: float) -> str:
    return f"{x:,.0f}"


def report(rows: list[dict], cfg: dict, impl_name: str) -> str:
    n, backward = cfg["length"], cfg["backward"]
    lines = [
        f"## impl='{cfg['impl']}' (-> {impl_name}): B={cfg['batch']}, Hq={cfg['heads']}, Hkv={cfg['kv_heads']}, "
        f"D={cfg['head_dim']}, N={n:,}, mask={cfg['mask']}, {cfg['dtype']}, "
        + ("forward + backward" if backward else "forward only"),
        "",
        "| run | layout | threads/rank | forward s | backward s | peak growth forward MiB (per rank) | "
        "peak growth fwd+bwd MiB (per rank) | peak RSS MiB (max rank) | K/V messages | "
        "score pairs per rank (% of N^2) | max diff |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ranks = row["ranks"]
        fwd = max(r["forward_s"] for r in ranks)
        bwd = f"{max(r['backward_s'] for r in ranks):.2f}" if backward else "-"
        peak = max(r["peak_rss_mib"] for r in ranks)
        grow_f = " / ".join(_mib(r["peak_forward_mib"] - r["rss_before_mib"]) for r in ranks)
        grow_b = " / ".join(_mib(r["peak_rss_mib"] - r["rss_before_mib"]) for r in ranks) if backward else "-"
        work = "-" if row["work"] is None else " / ".join(f"{100 * w / n**2:.0f}" for w in row["work"])
        lines.append(
            f"| {row['name']} | {row['layout']} | {row['threads']} | {fwd:.2f} | {bwd} | {grow_f} | "
            f"{grow_b} | {_mib(peak)} | {row['messages']} | {work} | {row['diff']:.1e} |"
        )
    return "\n".join(lines + [""])


HEADER = """# Ring attention: time and peak memory per rank vs one process (N = {n:,})

- machine: {machine}, {cores} cores, torch {torch}; gloo over 127.0.0.1; the ranks share the cores
  (threads per rank in the tables; 4 ranks on 2 cores are oversubscribed twice)
- times: one run each (first call, no warm-up), slowest rank (the ranks wait for each other); on this machine
  they show the ring's overhead and the causal load balance, not a speed-up
- memory: peak resident set size of each process during the call, as growth over its size just before
  (VmHWM reset with /proc/self/clear_refs), and the absolute peak (includes ~250 MiB of Python + torch)
- max diff: largest |ring - single process| over out, lse (and dq, dk, dv with backward), float32
- score pairs: the (query, key) pairs of the shard pairs a rank computes (empty shard pairs are skipped)
- command: `{command}`

"""

READING = """
Reading: with the contiguous layout a causal mask leaves rank r with r+1 of W shard pairs (the last
rank does the most work while the others wait) but K/V shards never cross the wrap-around (W(W-1)/2
messages); zigzag gives every rank the same work and sends every shard all the way round (W(W-1)
messages). Memory: the tiled kernel needs O(N) working memory, so at this length a rank's peak is set
by per-call buffers (two K/V shards in flight, fp32 dK/dV accumulators, recomputed partial states) and
is not much below the single process's: here the ring spreads K/V and work, it does not save memory.
The reference kernel materialises the scores of each call, so a rank's working memory is that of its
largest shard pair: (N/W)^2 scores for contiguous, (N/2W)^2 for zigzag, against N^2 in one process.
"""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python bench/ring.py", description=__doc__.split("\n")[0])
    p.add_argument("--length", type=int, default=16384)
    p.add_argument("--heads", type=int, default=None, help="heads (default 4 for auto, 1 for reference)")
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--mask", default="causal")
    p.add_argument(
        "--impl", default=None, help="one implementation (default: 'auto' with backward, then 'reference' forward only)"
    )
    p.add_argument("--no-backward", action="store_true", help="forward only")
    p.add_argument("--worlds", default="2,4", help="comma-separated process counts (default 2,4)")
    p.add_argument("--output", type=Path, default=RESULTS)
    a = p.parse_args(argv)
    sections = [(a.impl, not a.no_backward)] if a.impl else [("auto", not a.no_backward), ("reference", False)]
    command = " ".join(["python bench/ring.py", *(sys.argv[1:] if argv is None else argv)])
    text = HEADER.format(
        n=a.length, machine=platform.machine(), cores=os.cpu_count(), torch=torch.__version__, command=command
    )
    for impl, backward in sections:
        heads = a.heads or (1 if impl == "reference" else 4)
        cfg = dict(
            seed=0,
            dtype="float32",
            batch=1,
            heads=heads,
            kv_heads=heads,
            length=a.length,
            head_dim=a.head_dim,
            mask=a.mask,
            layout="contiguous",
            impl=impl,
            backward=backward,
        )
        q, k, v, _ = make_inputs({**cfg, "length": 2})
        impl_name = registry.select(impl, check_inputs(q, k, v, mask=make_mask(a.mask, 2), return_lse=True)).name
        rows = run(cfg, worlds=tuple(int(w) for w in a.worlds.split(",")))
        text += report(rows, cfg, impl_name) + "\n"
    text += READING
    a.output.parent.mkdir(parents=True, exist_ok=True)
    a.output.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
