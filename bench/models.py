"""MiniLM forward: qkv vs transformers' BertModel (eager and sdpa), one process, same weights and inputs.

Run: ``python bench/models.py [--batch 8] [--length 128] [--repeat 30]``; writes
``bench/results/models.md``. Timings are medians of interleaved runs (each round times every
contender once, so background load hits all of them alike); ratio = qkv / transformers.
transformers is imported here only (qkv never imports it).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch

try:
    from bench.report import save
except ImportError:  # run as a script (python bench/NAME.py): bench/ itself is on sys.path
    from report import save

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

__all__ = ["run", "main"]

RESULTS = Path(__file__).resolve().parent / "results" / "models.md"


def _inputs(tokenizer, batch: int, length: int, padded: bool):
    """``batch`` rows of ``length`` real tokens (English text, repeated); with ``padded`` every
    other row is half as long (right padding)."""
    text = (
        "The cat sat on the mat because it was tired. Attention lets every token look at every other "
        "token and take what it needs. "
    ) * 20
    ids = torch.tensor(tokenizer.encode(text, truncate=True).ids[: length - 1] + [102])  # [CLS] ... [SEP]
    input_ids = ids.repeat(batch, 1)
    mask = torch.ones_like(input_ids)
    if padded:
        mask[1::2, length // 2 :] = 0
        input_ids = input_ids.masked_fill(mask == 0, 0)
    return input_ids, mask


def _time(fn, repeat: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        fn()
    return [_once(fn) for _ in range(repeat)]


def _once(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def run(batch: int = 8, length: int = 128, repeat: int = 30) -> str:
    import transformers

    import qkv
    import qkv.models

    torch.manual_seed(0)
    ours = qkv.models.load("minilm")
    path = str(qkv.models.resolve("minilm"))
    hf = {
        impl: transformers.BertModel.from_pretrained(path, attn_implementation=impl).eval()
        for impl in ("eager", "sdpa")
    }
    lines = [
        f"# MiniLM forward: qkv vs transformers ({batch} x {length} tokens)",
        "",
        f"- machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), transformers {transformers.__version__}",
        f"- load average at start: {os.getloadavg()[0]:.1f} (other jobs share these cores: absolute ms are "
        "noisy, the interleaved ratios less so)",
        f"- qkv attention implementations: {', '.join(qkv.implementations())} (impl='auto')",
        f"- median of {repeat} interleaved runs after 3 warm-up runs each; ratio = qkv time / transformers time "
        "(< 1 means qkv is faster)",
        "- command: `python bench/models.py`",
        "",
        "| inputs | qkv ms | transformers eager ms | transformers sdpa ms | qkv / eager | qkv / sdpa | max abs diff |",
        "|---|---|---|---|---|---|---|",
    ]
    for padded in (False, True):
        ids, mask = _inputs(ours.tokenizer, batch, length, padded)
        contenders = {
            "qkv": lambda: ours(ids, mask).last_hidden_state,
            "eager": lambda: hf["eager"](input_ids=ids, attention_mask=mask).last_hidden_state,
            "sdpa": lambda: hf["sdpa"](input_ids=ids, attention_mask=mask).last_hidden_state,
        }
        times = {k: [] for k in contenders}
        with torch.no_grad():
            valid = mask.bool()
            diff = max((contenders["qkv"]() - contenders[k]())[valid].abs().max().item() for k in ("eager", "sdpa"))
            for fn in contenders.values():
                _time(fn, 0)
            for _ in range(repeat):  # interleave: one run of each per round
                for k, fn in contenders.items():
                    times[k].append(_once(fn))
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        label = f"every other row padded from token {length // 2}" if padded else "no padding"
        lines.append(
            f"| {label} | {med['qkv']:.1f} | {med['eager']:.1f} | {med['sdpa']:.1f} | "
            f"{med['qkv'] / med['eager']:.2f}x | {med['qkv'] / med['sdpa']:.2f}x | {diff:.1e} |"
        )
    lines.append(f"\nload average at end: {os.getloadavg()[0]:.1f}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    report = run(args.batch, args.length, args.repeat)
    save(report, args.out)


if __name__ == "__main__":
    main()
