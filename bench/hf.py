"""A Mistral-like transformers model with attn_implementation "qkv" vs transformers' "sdpa" and "eager".

Run: ``python bench/hf.py [--lengths 2048 8192] [--repeat 3]``; writes ``bench/results/hf.md``.

The model is random (``MistralModel``: 8 layers, hidden 512, 8 query / 2 key-value heads of 64,
MLP 1024, sliding window 512 on every layer), batch 1, fp32, ``torch.no_grad()``, no cache. Each
(contender, length) runs in its own subprocess (so peak RSS -- ``VmHWM`` -- is honest): it builds the
same seeded model, warms up once, times ``--repeat`` forwards (median) and saves a slice of the output,
which the parent checks against "eager" (max abs difference). The time spent inside the attention
function alone (summed over layers) is measured too, by wrapping the contender's function in the child
(benchmark only): the rest of the forward -- projections, MLP, norms, RoPE -- is the same for all three.
Other processes share the CPUs: the load average before and after is reported beside the figures;
ratios come from the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "hf.md"
CONTENDERS = ("qkv", "sdpa", "eager")
MODEL = dict(
    vocab_size=1000,
    hidden_size=512,
    intermediate_size=1024,
    num_hidden_layers=8,
    num_attention_heads=8,
    num_key_value_heads=2,
    head_dim=64,
    sliding_window=512,
    max_position_embeddings=16384,
)


def _peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(impl: str, length: int, repeat: int, out: str) -> None:
    """One contender at one length: prints a JSON line with times (s) and peak RSS, saves an output slice."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import torch
    from transformers import MistralConfig, MistralModel

    spent = [0.0]

    def timed(fn):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            spent[0] += time.perf_counter() - t0
            return out

        return wrapper

    from transformers import AttentionInterface
    from transformers.models.mistral import modeling_mistral

    if impl == "qkv":
        import qkv.hf

        AttentionInterface.register("qkv", timed(qkv.hf.attention_forward))
    elif impl == "sdpa":
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        AttentionInterface.register("sdpa", timed(sdpa_attention_forward))
    else:
        modeling_mistral.eager_attention_forward = timed(modeling_mistral.eager_attention_forward)
    torch.manual_seed(0)
    model = MistralModel(MistralConfig(**MODEL, attn_implementation=impl)).eval()
    ids = torch.randint(0, MODEL["vocab_size"], (1, length), generator=torch.Generator().manual_seed(1))
    times, attention = [], []
    with torch.no_grad():
        for i in range(repeat + 1):
            spent[0] = 0.0
            t = time.perf_counter()
            h = model(input_ids=ids, use_cache=False).last_hidden_state
            if i:  # the first call warms up
                times.append(time.perf_counter() - t)
                attention.append(spent[0])
    torch.save(h[0, :: max(1, length // 256)].clone(), out)
    print(
        json.dumps(
            {
                "impl": impl,
                "length": length,
                "times": times,
                "attention": attention,
                "peak_rss_mb": _peak_rss_mb(),
                "threads": torch.get_num_threads(),
            }
        )
    )


def _spawn(impl: str, length: int, repeat: int, out: str) -> dict:
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(root / "src"), os.environ.get("PYTHONPATH")])))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", impl, str(length), str(repeat), out]
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(lengths=(2048, 8192), repeat: int = 3) -> str:
    import torch

    load_start = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for length in lengths:
            res = {}
            for impl in CONTENDERS:
                out = f"{tmp}/{impl}-{length}.pt"
                r = _spawn(impl, length, repeat, out)
                r["ms"] = statistics.median(r["times"]) * 1e3
                r["attn_ms"] = statistics.median(r["attention"]) * 1e3
                r["out"] = torch.load(out)
                res[impl] = r
                print(
                    f"  {impl:5s} L={length}: {r['ms']:.0f} ms (attention {r['attn_ms']:.0f}), "
                    f"peak RSS {r['peak_rss_mb']:.0f} MB",
                    file=sys.stderr,
                )
            err = max((res[i]["out"] - res["eager"]["out"]).abs().max().item() for i in CONTENDERS)
            rows.append((length, res, err))
    load_end = os.getloadavg()
    lines = [
        "# transformers Mistral-like forward: attn_implementation qkv vs sdpa vs eager",
        "",
        f"Command: `python bench/hf.py --lengths {' '.join(map(str, lengths))} --repeat {repeat}`. "
        f"Model: MistralModel {MODEL['num_hidden_layers']} layers, hidden {MODEL['hidden_size']}, "
        f"{MODEL['num_attention_heads']}/{MODEL['num_key_value_heads']} heads of {MODEL['head_dim']}, "
        f"sliding window {MODEL['sliding_window']}; batch 1, fp32, no grad, no cache; median of {repeat} "
        "forwards after one warm-up, one subprocess per contender (peak RSS = VmHWM).",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, "
        f"transformers {_tf_version()}; load average {load_start[0]:.2f} at start, {load_end[0]:.2f} at end "
        "(other engineers share the CPUs).",
        "",
        "| tokens | qkv ms | sdpa ms | eager ms | sdpa / qkv | eager / qkv | peak RSS MB qkv / sdpa / eager "
        "| max abs diff vs eager |",
        "|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    attn = [
        "",
        "Time inside the attention function alone (all layers; the rest of the forward is shared):",
        "",
        "| tokens | qkv ms | sdpa ms | eager ms | sdpa / qkv | eager / qkv |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for length, res, err in rows:
        q, s, e = (res[i]["ms"] for i in CONTENDERS)
        rss = " / ".join(f"{res[i]['peak_rss_mb']:.0f}" for i in CONTENDERS)
        lines.append(f"| {length} | {q:.0f} | {s:.0f} | {e:.0f} | {s / q:.2f}x | {e / q:.2f}x | {rss} | {err:.1e} |")
        q, s, e = (res[i]["attn_ms"] for i in CONTENDERS)
        attn.append(f"| {length} | {q:.0f} | {s:.0f} | {e:.0f} | {s / q:.2f}x | {e / q:.2f}x |")
    text = "\n".join(lines + attn) + "\n"
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(text)
    return text


def _tf_version() -> str:
    import transformers

    return transformers.__version__


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lengths", type=int, nargs="+", default=[2048, 8192])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--child", nargs=4, metavar=("IMPL", "LENGTH", "REPEAT", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        impl, length, repeat, out = args.child
        child(impl, int(length), int(repeat), out)
        return
    print(run(args.lengths, args.repeat))


if __name__ == "__main__":
    main()
