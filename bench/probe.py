"""``qkv probe`` speed: 300 sentences on MiniLM, padded batches vs one text at a time.

Run: ``python bench/probe.py [--items 300] [--repeat 3]``; writes ``bench/results/probe.md``.

* **batch** -- :func:`qkv.lens.probe` as ``qkv probe`` runs it: padded batches of 32, only the weights recorded;
* **batch, one per pass** -- the same with ``batch_size=1`` (weights only, no padding);
* **one at a time** -- ``qkv.trace(text)`` per sentence (every step recorded, as before batch tracing), then
  the same span mapping and scores.

The model is loaded before timing; each figure is the median of ``--repeat`` runs, interleaved so background
load hits every variant alike. The items are the shipped twins with short prefixes ("Yesterday, " ...) to make
300 distinct sentences.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

__all__ = ["items", "run", "main"]

RESULTS = Path(__file__).resolve().parent / "results" / "probe.md"
PREFIXES = ("", "Yesterday, ", "In the story, ", "As expected, ", "Later that day, ")


def items(n: int):
    """``n`` distinct items: the shipped twins, then again behind each prefix (spans shifted)."""
    from qkv.lens.probe_io import Dataset, Span, load_twins

    base, out = load_twins().items, []
    for p in PREFIXES:
        for it in base:

            def shift(s: Span, n: int = len(p)) -> Span:
                return Span(s.text, s.start + n, s.end + n)

            out.append(
                replace(
                    it,
                    id=f"{p[:4]}{it.id}",
                    text=p + it.text,
                    query=shift(it.query),
                    candidates=tuple(shift(c) for c in it.candidates),
                    pair=None if it.pair is None else f"{p}{it.pair}",
                )
            )
            if len(out) == n:
                return Dataset(out, [], "bench")
    raise ValueError(f"at most {len(PREFIXES) * len(base)} bench items, asked for {n}")


def one_at_a_time(data, model):
    """Today's path before batching: ``qkv.trace`` per text (all steps), then the probe's mapping and analysis."""
    import qkv
    from qkv.lens.probing import analyse, item_scores, map_item

    used, scores = [], []
    for it in data.items:
        t = qkv.trace(it.text, model)
        m = map_item(it, t)
        used.append(it)
        scores.append(item_scores(t, m))
    return analyse(scores, used, rounds=1000)


def run(n: int = 300, repeat: int = 3) -> str:
    from qkv.lens.probing import probe
    from qkv.lens.trace import load_model

    model = load_model("minilm")
    data = items(n)
    load0 = os.getloadavg()[0]
    variants = {
        "batch (32 per pass, weights only)": lambda: probe(data, model, batch_size=32),
        "batch_size=1 (weights only)": lambda: probe(data, model, batch_size=1),
        "one at a time (qkv.trace, every step)": lambda: one_at_a_time(data, model),
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    results = {}
    for _ in range(repeat):
        for name, fn in variants.items():
            start = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - start)
    load1 = os.getloadavg()[0]
    base = statistics.median(times["one at a time (qkv.trace, every step)"])
    rows = [
        f"| {k} | {statistics.median(v):.2f} | {min(v):.2f} | {base / statistics.median(v):.1f}x | "
        f"{results[k].heldout.score.accuracy:.3f} |"
        for k, v in times.items()
    ]
    return "\n".join(
        [
            f"# qkv probe: {n} sentences on MiniLM",
            "",
            (
                f"- machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
                f"({torch.get_num_threads()} threads)"
            ),
            f"- load average at start {load0:.1f}, at end {load1:.1f} (other jobs share these cores)",
            (
                f"- median (and best) of {repeat} interleaved runs, model loaded beforehand; includes the statistics "
                f"(1000-draw permutation null)"
            ),
            "- command: `python bench/probe.py`",
            "",
            "| variant | median s | best s | speed-up vs one at a time | held-out accuracy (same in all) |",
            "|---|---|---|---|---|",
            *rows,
            "",
        ]
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=300)
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args(argv)
    text = run(args.items, args.repeat)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
