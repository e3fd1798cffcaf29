"""Jobs for test_ring_agreement.py (module level so that spawned children import them by name)."""

from __future__ import annotations

import torch

import qkv
from qkv.distributed import ring_attention


def scenarios(rank: int) -> dict:
    """name -> ring_attention keyword arguments for this rank; the last one agrees on every rank."""
    m, mods = qkv.masks, qkv.mods
    ids = torch.arange(16) // (4 if rank == 0 else 5)
    return {
        "mask": dict(mask=m.causal() if rank == 0 else m.sliding_window(4)),
        "alignment": dict(mask=m.causal("bottom_right" if rank == 0 else "top_left")),
        "document ids": dict(mask=m.document(ids)),
        "mask or none": dict(mask=m.causal() if rank == 0 else None),
        "score mod": dict(mask=m.causal(), score_mod=mods.alibi(mods.alibi_slopes(2)) if rank == 0 else None),
        "softcap": dict(score_mod=mods.softcap(30.0 if rank == 0 else 50.0)),
        "scale": dict(scale=0.5 if rank == 0 else None),
        "agree": dict(
            mask=m.document(torch.arange(16) // 4) & m.causal(), score_mod=mods.alibi(mods.alibi_slopes(2)), scale=0.3
        ),
    }


def disagreements(rank: int, world: int) -> dict:
    """Run every scenario; return name -> the ValueError message (or "ok" with the max error vs one process)."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 16, 8, dtype=torch.float64) for _ in range(3))
    loc = [x.chunk(world, dim=2)[rank].contiguous() for x in (q, k, v)]
    out = {}
    for name, kw in scenarios(rank).items():
        try:
            o = ring_attention(*loc, timeout=60, **kw)
        except ValueError as e:
            out[name] = str(e)
            continue
        ref = qkv.attention(q, k, v, impl="reference", **kw).chunk(world, dim=2)[rank]
        out[name] = f"ok {float((o - ref).abs().max()):.1e}"
    return out
