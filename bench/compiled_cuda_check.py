"""One device check: qkv under ``torch.compile`` (Inductor, ``fullgraph=True``) on a GPU, forward and backward
against the eager reference, and the issue's graph-break table on CUDA.

Run on a machine with a GPU (one short call): ``python -m bench.compiled_cuda_check``; then
``python -m bench.compiled --device cuda --n 4096 --window 256 --hidden 512`` for the timings.
"""

from __future__ import annotations

import time

import torch
import torch._dynamo as dynamo

import qkv
from qkv import masks, mods

B, HQ, HKV, LQ, LK, D = 2, 8, 2, 300, 333, 64


def cases(dev: str, bias: torch.Tensor) -> dict:
    lengths = torch.tensor([0, 250], device=dev)
    ids = torch.cat([torch.zeros(150), torch.ones(183)]).long().to(dev)
    return {
        "causal": lambda: dict(mask=masks.causal()),
        "window": lambda: dict(mask=masks.sliding_window(64)),
        "padding": lambda: dict(mask=masks.padding(lengths)),
        "document&causal": lambda: dict(mask=masks.document(ids[:LQ], ids) & masks.causal()),
        "causal+alibi": lambda: dict(mask=masks.causal(), score_mod=mods.alibi(mods.alibi_slopes(HQ))),
        "causal+bias(grad)": lambda: dict(mask=masks.causal(), score_mod=mods.bias(bias)),
        "global_window+softcap": lambda: dict(mask=masks.global_window(4, 32), score_mod=mods.softcap(20.0)),
    }


def _run(dev, impl, kw, qkv0, bias, compiled):
    q, k, v = (t.detach().clone().requires_grad_() for t in qkv0)

    def fn(q, k, v):
        return qkv.attention(q, k, v, impl=impl, **kw())

    if compiled:
        dynamo.reset()
        fn = torch.compile(fn, fullgraph=True)
    bias.grad = None
    out = fn(q, k, v)
    (out * torch.linspace(-1, 1, out.shape[-1], device=dev)).sum().backward()
    return [out.detach(), q.grad, k.grad, v.grad, None if bias.grad is None else bias.grad.clone()]


def main(dev: str = "cuda") -> None:
    print("torch", torch.__version__, torch.cuda.get_device_name() if dev == "cuda" else dev)
    g = torch.Generator(device=dev).manual_seed(0)
    bias = torch.randn(1, HQ, LQ, LK, device=dev, generator=g).requires_grad_()
    for name, kw in cases(dev, bias).items():
        qkv0 = [torch.randn(B, h, n, D, device=dev, generator=g) for h, n in ((HQ, LQ), (HKV, LK), (HKV, LK))]
        t = time.perf_counter()
        got = _run(dev, "tiled", kw, qkv0, bias, compiled=True)
        took = time.perf_counter() - t
        want = _run(dev, "reference", kw, qkv0, bias, compiled=False)
        errs = [None if a is None else f"{(a - b).abs().max().item():.1e}" for a, b in zip(got, want)]
        print(f"{name:24s} compile+run {took:5.1f} s; max error out, dq, dk, dv, dbias: {errs}", flush=True)
    q, k, v = (torch.randn(1, 4, 512, 64, device=dev) for _ in range(3))
    rows = {
        "no mask": {},
        "causal": {"mask": masks.causal()},
        "sliding_window(64)": {"mask": masks.sliding_window(64)},
        "causal + alibi": {"mask": masks.causal(), "score_mod": mods.alibi(mods.alibi_slopes(4))},
    }
    for row, kw in rows.items():
        counts = []
        for impl in ("auto", "tiled"):
            dynamo.reset()
            e = dynamo.explain(lambda q, k, v, impl=impl, kw=kw: qkv.attention(q, k, v, impl=impl, **kw))(q, k, v)
            counts.append(f"{impl}={e.graph_break_count}")
        print(f"graph breaks on {dev}, {row}: {', '.join(counts)}", flush=True)


if __name__ == "__main__":
    main("cuda" if torch.cuda.is_available() else "cpu")
