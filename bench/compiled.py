"""A small Llama-like model, eager vs ``torch.compile``, with three attentions for one sliding-window mask.

The model (RMSNorm, attention, SwiGLU MLP; ``--layers`` blocks, hidden ``--hidden``, head dim 64) is the same
for every contender; only the attention call differs:

* **qkv** -- ``qkv.attention(q, k, v, mask=qkv.masks.sliding_window(W))`` (auto: the tiled engine; compiled,
  its registered ops: the block-sparse plan is made inside the op, the graph around it is fused by Inductor);
* **sdpa+dense** -- ``scaled_dot_product_attention`` with the window as a dense ``(L, L)`` bool mask;
* **flex** -- FlexAttention with the window's block mask (``create_block_mask``), compiled only (eager
  FlexAttention is a dense reference implementation); on CPU forward only (no backward there in torch 2.13).

Each row is the median of ``--rounds`` timed calls, in rounds that interleave every contender, after a
warm-up (the compile happens in the warm-up and is reported separately); forward+backward runs
``loss.backward()`` on the output's sum. Compiled outputs are checked against the eager qkv model (same
weights) before anything is timed.

Run: ``python -m bench.compiled [--n 1024] [--window 128] [--layers 2] [--hidden 256] [--rounds 5]
[--device cpu|cuda]``; writes ``bench/results/compiled.md`` (``compiled_cuda.md`` on a GPU). The default run
spends most of its time compiling (five graphs; minutes on a loaded 2-core machine).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from torch import nn

import qkv

try:
    from bench.report import save
except ImportError:  # run as a script (python bench/compiled.py): bench/ itself is on sys.path
    from report import save

__all__ = ["Model", "attentions", "run", "main"]

RESULTS = Path(__file__).resolve().parent / "results" / "compiled.md"
HEAD_DIM = 64


class Block(nn.Module):
    """One pre-norm Llama-like block; ``attend(q, k, v)`` on ``(B, H, L, 64)`` is the only thing that varies."""

    def __init__(self, hidden: int, attend):
        super().__init__()
        self.heads = hidden // HEAD_DIM
        self.norm1, self.norm2 = nn.RMSNorm(hidden), nn.RMSNorm(hidden)
        self.qkv_proj = nn.Linear(hidden, 3 * hidden, bias=False)
        self.out = nn.Linear(hidden, hidden, bias=False)
        self.gate_up = nn.Linear(hidden, 8 * hidden // 3 * 2, bias=False)
        self.down = nn.Linear(8 * hidden // 3, hidden, bias=False)
        self.attend = attend

    def forward(self, x):
        B, L, E = x.shape
        q, k, v = self.qkv_proj(self.norm1(x)).view(B, L, 3, self.heads, HEAD_DIM).permute(2, 0, 3, 1, 4)
        a = self.attend(q, k, v).transpose(1, 2).reshape(B, L, E)  # (B, H, L, D) -> (B, L, E)
        x = x + self.out(a)
        g, u = self.gate_up(self.norm2(x)).chunk(2, dim=-1)
        return x + self.down(nn.functional.silu(g) * u)


class Model(nn.Module):
    def __init__(self, layers: int, hidden: int, attend):
        super().__init__()
        self.blocks = nn.ModuleList(Block(hidden, attend) for _ in range(layers))

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return x


def attentions(n: int, window: int, device: str = "cpu") -> dict:
    """``{name: attend(q, k, v)}`` for the window mask ``q - window <= kv <= q``."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    mask = qkv.masks.sliding_window(window)
    dense = mask.dense(1, 1, n, n, device)[0, 0]  # (L, L) bool, built once outside the model
    block_mask = create_block_mask(lambda b, h, q, kv: (q >= kv) & (q - kv <= window), None, None, n, n, device=device)
    return {
        "qkv": lambda q, k, v: qkv.attention(q, k, v, mask=mask),
        "sdpa+dense": lambda q, k, v: nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=dense),
        "flex": lambda q, k, v: flex_attention(q, k, v, block_mask=block_mask),
    }


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _steps(n, window, layers, hidden, device) -> tuple[dict, dict]:
    """``({(attention, mode, pass): step()}, {same key: first-call seconds})``: every step compiled (warmed up)
    and checked against the eager qkv model before anything is timed."""
    torch.manual_seed(0)
    attends = attentions(n, window, device)
    base = Model(layers, hidden, attends["qkv"]).to(device)
    x = torch.randn(1, n, hidden, device=device)
    with torch.no_grad():
        want = base(x)
    steps, first = {}, {}
    for name, attend in attends.items():
        model = Model(layers, hidden, attend).to(device)
        model.load_state_dict(base.state_dict())
        for mode in ("eager", "compiled"):
            if name == "flex" and mode == "eager":
                continue  # eager FlexAttention is its dense reference, not the product
            m = torch.compile(model) if mode == "compiled" else model
            for p in ("fwd",) if name == "flex" and device == "cpu" else ("fwd", "fwd+bwd"):
                xi = x.clone().requires_grad_(p == "fwd+bwd")

                def step(m=m, xi=xi, p=p):
                    with torch.set_grad_enabled(p == "fwd+bwd"):
                        out = m(xi)
                    if p == "fwd+bwd":
                        out.sum().backward()
                    _sync(device)
                    return out

                t = time.perf_counter()
                out = step()  # warm-up (and the compile)
                first[name, mode, p] = time.perf_counter() - t
                err = (out.detach() - want).abs().max().item()
                if err > 1e-3 * max(1.0, want.abs().max().item()):
                    raise AssertionError(f"{name} {mode} {p}: output differs from eager qkv by {err:.3g}")
                steps[name, mode, p] = step
                print(f"{name:11s} {mode:8s} {p:8s} first call {first[name, mode, p]:.1f} s", flush=True)
    return steps, first


def run(n=1024, window=128, layers=2, hidden=256, rounds=5, device="cpu") -> list[dict]:
    """Rows ``{attention, mode, pass, ms, compile_s}``; ``mode`` eager/compiled, ``pass`` fwd/fwd+bwd. The steps
    are timed in interleaved rounds (a changing machine load hits every contender alike); medians."""
    steps, first = _steps(n, window, layers, hidden, device)
    times: dict = {key: [] for key in steps}
    for _ in range(rounds):
        for key, step in steps.items():
            t = time.perf_counter()
            step()
            times[key].append(time.perf_counter() - t)
    rows = []
    for (name, mode, p), ts in times.items():
        ms = statistics.median(ts) * 1e3
        rows.append({"attention": name, "mode": mode, "pass": p, "ms": ms, "compile_s": first[name, mode, p]})
        print(f"{name:11s} {mode:8s} {p:8s} {ms:8.1f} ms", flush=True)
    for r in rows:
        r["compile_s"] = r["compile_s"] if r["mode"] == "compiled" else None
    return rows


def _where(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    return f"CPU ({os.cpu_count()} cores, {platform.processor() or platform.machine()})"


def report(rows: list[dict], args) -> str:
    eager = {(r["attention"], r["pass"]): r["ms"] for r in rows if r["mode"] == "eager"}
    lines = [
        "# Compiled vs eager: a small Llama-like model with a sliding-window mask",
        "",
        f"`python -m bench.compiled --n {args.n} --window {args.window} --layers {args.layers} "
        f"--hidden {args.hidden} --rounds {args.rounds} --device {args.device}`; B=1, head dim {HEAD_DIM}, fp32, "
        f"{_where(args.device)}, torch {torch.__version__}. "
        "Median ms per call; `vs eager` is the same attention's eager time over this one.",
        "",
        "| attention | mode | pass | ms | vs eager | first call (compile) s |",
        "|---|---|---|---:|---:|---:|",
    ]
    for r in rows:
        base = eager.get((r["attention"], r["pass"]))
        ratio = f"{base / r['ms']:.2f}x" if base and r["mode"] == "compiled" else ""
        comp = f"{r['compile_s']:.1f}" if r["compile_s"] is not None else ""
        lines.append(f"| {r['attention']} | {r['mode']} | {r['pass']} | {r['ms']:.1f} | {ratio} | {comp} |")
    lines += [
        "",
        "FlexAttention: compiled only (eager FlexAttention is its dense reference); on CPU forward only (no "
        "backward there in torch 2.13). First calls are shorter when Inductor's on-disk cache already holds "
        "the graph (a second run of this script).",
        "",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--window", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--out", type=Path, default=None, help="default: bench/results/compiled[_cuda].md")
    args = ap.parse_args(argv)
    out = args.out or (RESULTS if args.device == "cpu" else RESULTS.with_name("compiled_cuda.md"))
    save(report(run(args.n, args.window, args.layers, args.hidden, args.rounds, args.device), args), out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
