"""Small problems: where qkv's tiled engine starts to beat the reference (sets tiled's priority).

``python -m bench --small`` times reference vs tiled (a padding mask, built anew per call as a model
does) for small ``B * H * Lq * Lk``, in interleaved rounds in this process, and records the
medians in ``attention.json`` / ``attention.md``.
"""

from __future__ import annotations

import statistics
import sys
import time

import torch

from qkv import attention, masks

__all__ = ["run_small", "SHAPES"]

SHAPES = [(1, 12, 16, 32), (1, 12, 32, 32), (1, 12, 64, 32), (1, 12, 128, 32), (4, 12, 64, 32), (8, 12, 128, 32)]


def run_small(rounds: int = 30) -> list[dict]:
    torch.manual_seed(0)
    rows = []
    for B, H, L, D in SHAPES:
        q, k, v = (torch.randn(B, H, L, D) for _ in range(3))
        lengths = torch.full((B,), max(L - 3, 1))
        times: dict[str, list[float]] = {"reference": [], "tiled": []}
        for r in range(rounds + 1):
            for impl in times:
                mask = masks.padding(lengths)
                t0 = time.perf_counter()
                attention(q, k, v, mask=mask, impl=impl)
                if r:
                    times[impl].append(time.perf_counter() - t0)
        ms = {impl: statistics.median(ts) * 1e3 for impl, ts in times.items()}
        rows.append({"B": B, "H": H, "L": L, "D": D, "scores": B * H * L * L, **{f"{i}_ms": m for i, m in ms.items()}})
        print(
            f"  small B={B} H={H} L={L}: reference {ms['reference']:.2f} ms, tiled {ms['tiled']:.2f} ms",
            file=sys.stderr,
            flush=True,
        )
    return rows
