"""Ring attention on local gloo processes vs single-process attention: max difference and time.

Bad arguments print one line ``python -m qkv.distributed.demo: error: ...`` and exit with status 2 (argparse's
way); a failed run (a rank that raised, died or timed out) prints one line per rank and exits with 1.

Run::

    python -m qkv.distributed.demo --world-size 4
    python -m qkv.distributed.demo --world-size 2 --length 8192 --mask causal --layout contiguous --backward

Every rank draws the same seeded q, k, v ``(B, H, N, D)`` for the whole sequence, keeps its shard,
runs :func:`qkv.distributed.ring_attention` (and its backward), and gathers the result; the parent
process then runs ``qkv.attention`` on the whole sequence and prints the largest differences.
:func:`ring_job` and :func:`single_job` are also what ``bench/ring.py`` measures (time and peak memory).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time

import torch
import torch.distributed as dist

from .. import masks
from ..core import attention
from . import launch
from .plan import plan_ring
from .ring import ring_attention
from .sharding import gather, local_length, shard

__all__ = ["make_mask", "make_inputs", "ring_job", "single_job", "main"]

_DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}


def _size(name: str, arg: str, default: int) -> int:
    """The ``W``/``S`` of ``sliding_window:W`` / ``document:S``: a positive integer."""
    if not arg:
        return default
    try:
        value = int(arg)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{name}:{arg} needs a positive integer after the colon, e.g. {name}:{default}")
    return value


def make_mask(spec: str, n: int):
    """``full`` | ``causal`` | ``causal_top_left`` | ``sliding_window:W`` | ``document:S`` (documents of S tokens)."""
    name, _, arg = spec.partition(":")
    if name == "full":
        return None
    if name == "causal":
        return masks.causal()
    if name == "causal_top_left":
        return masks.causal("top_left")
    if name == "sliding_window":
        return masks.sliding_window(_size(name, arg, 256))
    if name == "document":
        return masks.document(torch.arange(n) // _size(name, arg, 1000)) & masks.causal()
    raise ValueError(f"unknown mask {spec!r}; use full, causal, causal_top_left, sliding_window:W or document:S")


def make_inputs(cfg: dict):
    """The whole-sequence q, k, v (and the output gradient) from ``cfg``'s seed; identical on every process."""
    g = torch.Generator().manual_seed(cfg["seed"])
    dt = _DTYPES[cfg["dtype"]]
    B, H, Hkv, N, D = cfg["batch"], cfg["heads"], cfg["kv_heads"], cfg["length"], cfg["head_dim"]
    q = torch.randn(B, H, N, D, generator=g).to(dt)
    k = torch.randn(B, Hkv, N, D, generator=g).to(dt)
    v = torch.randn(B, Hkv, N, D, generator=g).to(dt)
    dout = torch.randn(B, H, N, D, generator=g).to(dt)
    return q, k, v, dout


def _grad(x: torch.Tensor) -> torch.Tensor:
    """``x.grad`` after the backward (every input of a backward run requires grad)."""
    assert x.grad is not None, "the backward ran: every input holds a gradient"
    return x.grad


def _peak_rss_mib() -> float:
    """Peak resident set size of this process (MiB) since the last :func:`_reset_peak` (Linux), else lifetime."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:  # pragma: no cover - not Linux
        pass
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024 if sys.platform != "darwin" else kib / 2**20


def _reset_peak() -> None:
    """Restart the peak-RSS high-water mark (Linux ``/proc/self/clear_refs``), so that the peak is the call's own."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:  # pragma: no cover - not Linux or not permitted: the lifetime peak is reported
        pass


def _rss_mib() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:  # pragma: no cover - not Linux
        return float("nan")


def ring_job(rank: int, world: int, cfg: dict) -> dict:
    """One rank of the demo/benchmark: time the ring forward (and backward); return gathered results on rank 0."""
    q, k, v, dout = make_inputs(cfg)
    layout, mask = cfg["layout"], make_mask(cfg["mask"], cfg["length"])
    loc = [shard(x, 2, layout=layout).detach().clone().requires_grad_(cfg["backward"]) for x in (q, k, v)]
    dout_loc = shard(dout, 2, layout=layout).contiguous()
    del q, k, v, dout
    rss_before = _rss_mib()
    dist.barrier()
    _reset_peak()
    t0 = time.perf_counter()
    out, lse = ring_attention(*loc, mask=mask, return_lse=True, layout=layout, impl=cfg["impl"])
    t_fwd = time.perf_counter() - t0
    peak_fwd = _peak_rss_mib()
    t_bwd = float("nan")
    if cfg["backward"]:
        t1 = time.perf_counter()
        out.backward(dout_loc)
        t_bwd = time.perf_counter() - t1
    peak = _peak_rss_mib()
    res: dict[str, object] = {
        "rank": rank,
        "forward_s": t_fwd,
        "backward_s": t_bwd,
        "rss_before_mib": rss_before,
        "peak_forward_mib": peak_fwd,
        "peak_rss_mib": peak,
    }
    if cfg.get("gather", True):
        full = [gather(x.detach(), 2, layout=layout) for x in (out, lse)]
        if cfg["backward"]:
            full += [gather(_grad(x), 2, layout=layout) for x in loc]
        if rank == 0:
            res["tensors"] = full
    return res


def single_job(rank: int, world: int, cfg: dict) -> dict:
    """The single-process baseline: ``qkv.attention`` on the whole sequence (time, peak memory, results)."""
    q, k, v, dout = make_inputs(cfg)
    full = [x.requires_grad_(cfg["backward"]) for x in (q, k, v)]
    rss_before = _rss_mib()
    _reset_peak()
    t0 = time.perf_counter()
    out, lse = attention(*full, mask=make_mask(cfg["mask"], cfg["length"]), impl=cfg["impl"], return_lse=True)
    t_fwd = time.perf_counter() - t0
    peak_fwd = _peak_rss_mib()
    t_bwd = float("nan")
    if cfg["backward"]:
        t1 = time.perf_counter()
        out.backward(dout)
        t_bwd = time.perf_counter() - t1
    res: dict[str, object] = {
        "rank": rank,
        "forward_s": t_fwd,
        "backward_s": t_bwd,
        "rss_before_mib": rss_before,
        "peak_forward_mib": peak_fwd,
        "peak_rss_mib": _peak_rss_mib(),
    }
    if cfg.get("gather", True):
        res["tensors"] = [out.detach(), lse.detach()] + ([x.grad for x in full] if cfg["backward"] else [])
    return res


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m qkv.distributed.demo", description=__doc__.split("\n")[0])
    p.add_argument("--world-size", type=int, default=4, help="number of gloo processes (default 4)")
    p.add_argument("--length", type=int, default=4096, help="global sequence length N (default 4096)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=None, help="key/value heads (GQA); default = heads")
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--mask", default="causal", help="full | causal | causal_top_left | sliding_window:W | document:S")
    p.add_argument("--layout", default="zigzag", choices=("contiguous", "zigzag"))
    p.add_argument("--dtype", default="float32", choices=sorted(_DTYPES))
    p.add_argument("--impl", default="auto", help="attention implementation per shard pair (default auto)")
    p.add_argument("--backward", action="store_true", help="also run and check the backward pass")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=600.0, help="bound on the whole run in seconds")
    return p


MAX_WORLD = 64  #: local processes at most (each is a full Python + torch)


def _check_args(p: argparse.ArgumentParser, a) -> None:
    """Reject bad arguments the way argparse does: ``prog: error: ...`` on stderr, status 2."""
    from ..core import implementations

    for flag, value in (
        ("--world-size", a.world_size),
        ("--length", a.length),
        ("--batch", a.batch),
        ("--heads", a.heads),
        ("--head-dim", a.head_dim),
    ):
        if value < 1:
            p.error(f"{flag} must be at least 1, got {value}")
    if a.world_size > MAX_WORLD:
        p.error(f"--world-size {a.world_size} starts that many local processes; use at most {MAX_WORLD}")
    if a.kv_heads is not None and (a.kv_heads < 1 or a.heads % a.kv_heads):
        p.error(
            f"--kv-heads {a.kv_heads} must divide --heads {a.heads} (GQA: each key/value head serves "
            f"heads/kv-heads query heads); e.g. --kv-heads 1 or --kv-heads {a.heads}"
        )
    if not a.timeout > 0 or a.timeout == float("inf"):
        p.error(f"--timeout must be a positive number of seconds, got {a.timeout}")
    if a.impl not in implementations() and a.impl != "auto":
        p.error(f"--impl {a.impl!r} is unknown; choose auto or one of {', '.join(sorted(implementations()))}")
    try:
        make_mask(a.mask, a.length)
    except ValueError as e:
        p.error(f"--mask: {e}")


def _failure_line(e: launch.SpawnError) -> str:
    """One line per failed rank: its kind and the last line of its traceback (the exception itself)."""
    return "; ".join(
        f"rank {f.rank} {f.kind}: {f.message.strip().splitlines()[-1] if f.message.strip() else ''}" for f in e.failures
    )


def main(argv=None) -> int:
    p = _parser()
    a = p.parse_args(argv)
    _check_args(p, a)
    try:
        return _run(a)
    except launch.SpawnError as e:
        print(f"{p.prog}: error: the ring run failed: {_failure_line(e)}", file=sys.stderr)
        return 1
    except ValueError as e:
        print(f"{p.prog}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2


def _run(a) -> int:
    cfg = dict(
        seed=a.seed,
        dtype=a.dtype,
        batch=a.batch,
        heads=a.heads,
        kv_heads=a.kv_heads or a.heads,
        length=a.length,
        head_dim=a.head_dim,
        mask=a.mask,
        layout=a.layout,
        impl=a.impl,
        backward=a.backward,
    )
    print(
        f"ring attention: N={a.length} B={a.batch} Hq={a.heads} Hkv={cfg['kv_heads']} D={a.head_dim} "
        f"mask={a.mask} layout={a.layout} {a.dtype} impl={a.impl}; {a.world_size} gloo processes on 127.0.0.1 "
        f"({os.cpu_count()} CPU cores)"
    )
    t0 = time.perf_counter()
    ranks = launch.spawn(ring_job, a.world_size, args=(cfg,), timeout=a.timeout)
    wall = time.perf_counter() - t0
    single = single_job(0, 1, cfg)
    names = ["out", "lse"] + (["dq", "dk", "dv"] if a.backward else [])
    W = a.world_size
    lengths = [local_length(a.length, W, r, a.layout) for r in range(W)]
    plan = plan_ring(make_mask(a.mask, a.length), lengths, lengths, a.layout)
    print(
        f"  ring forward   {max(r['forward_s'] for r in ranks):8.3f} s  (slowest rank; per rank: "
        + ", ".join(f"{r['forward_s']:.3f}" for r in ranks)
        + ")"
    )
    if a.backward:
        print(f"  ring backward  {max(r['backward_s'] for r in ranks):8.3f} s")
    print(
        f"  single process {single['forward_s']:8.3f} s forward"
        + (f", {single['backward_s']:.3f} s backward" if a.backward else "")
        + f"  (impl={a.impl})"
    )
    print(
        f"  spawn + run    {wall:8.3f} s wall;  K/V messages per forward: {plan.messages()} "
        f"(full ring: {W * (W - 1)}); score pairs per rank: {[plan.work(r) for r in range(W)]}"
    )
    for name, x, y in zip(names, ranks[0]["tensors"], single["tensors"]):
        fin = torch.isfinite(y)
        diff = (x.double() - y.double())[fin].abs().max().item() if fin.any() else 0.0
        print(f"  max |{name} - single process| = {diff:.3e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
