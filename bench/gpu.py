"""qkv on a GPU in one call: correctness of every engine, attention speed, a transformers model.

Run on the device: ``PYTHONPATH=src python3 bench/gpu.py`` (from the repository root; no network, qkv need not
be installed); ``--smoke`` runs the same code on CPU at tiny sizes (a check of the script, not a measurement).
Writes ``bench/results/gpu.md`` (``--out``; ``--smoke``: ``gpu_smoke.md``) after every line, so a run cut short
still leaves its report.

Sections, in order (each in its own try/except: an error is written into the report and the run goes on):

1. correctness of every engine and ``auto`` vs an fp64 reference on the device (``bench/gpu_correct.py``):
   masks causal, window, document, prefix, global_window, a composition; mods ALiBi, softcap, bias (with its
   gradient); GQA, ``Lq != Lk``; fp32 (every case) and bf16 (a subset); forward, backward and lse as declared;
   FlashAttention's error rule; the non-finite rule;
2. speed, bf16, B=1, H=16, D=128, N = 4,096 / 16,384 / 65,536: qkv ``auto`` vs SDPA flash vs FlexAttention called
   directly with a hand-built BlockMask, masks causal / window 1,024 / document, forward and forward+backward,
   with pairs/s and the fraction of the bf16 peak (``--peak``, default 790 TFLOP/s measured on an H200);
3. a Mistral-like transformers model (8 layers, hidden 1024, 16/4 heads, window 4,096) with
   ``attn_implementation="qkv"`` vs ``"sdpa"`` at 8,192 and 32,768 tokens.

A global time budget (``--budget``, default 360 s) skips what would not fit: the largest sizes and lengths come
last (speed N=65,536 and the model at 32,768 tokens after the smaller ones of every section).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import traceback
from pathlib import Path

import torch

try:
    from bench import gpu_correct, gpu_speed
except ImportError:  # run as a script (python bench/gpu.py): bench/ itself is on sys.path
    import gpu_correct
    import gpu_speed

__all__ = ["Report", "main"]

RESULTS = Path(__file__).resolve().parent / "results" / "gpu.md"
SMOKE = RESULTS.with_name("gpu_smoke.md")  # a CPU check of the script, never mistaken for GPU figures
PEAK_BF16 = 790e12
#: The fraction of the budget before which each phase may start new work (later phases get what is left).
UNTIL = {"correctness": 0.33, "speed": 0.62, "model": 0.74, "speed_large": 0.88, "model_large": 0.95}


class Report:
    """The markdown report, written to ``path`` after every addition, and the time budget of the run."""

    def __init__(self, path: Path, budget_s: float):
        self.path, self.budget_s, self.t0, self.lines = path, budget_s, time.perf_counter(), []
        path.parent.mkdir(parents=True, exist_ok=True)

    def add(self, *lines: str) -> None:
        for line in lines:
            print(line, flush=True)
        self.lines.extend(lines)
        self.path.write_text("\n".join(self.lines) + "\n")

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def left(self) -> float:
        return self.budget_s - self.elapsed()

    def before(self, fraction: float) -> bool:
        """Whether the run is still inside the first ``fraction`` of its budget (where a phase may start work)."""
        return self.elapsed() < fraction * self.budget_s

    def section(self, title: str, fn, *args) -> None:
        """Run ``fn(self, *args)``; an exception is reported (type, message, last frames) and the run goes on."""
        t = time.perf_counter()
        try:
            fn(self, *args)
        except Exception as e:
            tb = traceback.format_exc().strip().splitlines()[-6:]
            self.add("", f"**{title}: failed** with `{type(e).__name__}: {str(e)[:300]}`", "", "```", *tb, "```")
        self.add(
            "", f"_{title}: {time.perf_counter() - t:.1f} s (run at {self.elapsed():.0f} s of {self.budget_s:.0f})_"
        )


def _table(rep: Report, header: list[str]) -> None:
    rep.add(_row(*header), "|" + "|".join("---" for _ in header) + "|")


def _row(*cells) -> str:
    """A markdown table row; a ``|`` inside a cell (a mask union, ``max |h|``) is escaped."""
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def correctness(rep: Report, cfg: dict) -> None:
    rep.add("", "## 1. Correctness vs fp64 on the device (FlashAttention's rule)", "")
    rep.add(
        f"B=1, Hq=8, Hkv=2 (GQA), L={cfg['L']}, D={cfg['D']}. `worst` = max over out/lse/grads of "
        "err / (2 x plain err + 1e-5 x max|fp64|): <= 1 passes. `declined` = the engine's declared reason "
        "(not a failure).",
        "",
    )
    rows = gpu_correct.nonfinite_case(cfg["device"])
    rep.add(
        "Non-finite rule (NaN in the last key, causal mask: only the last query row may be NaN): "
        + ", ".join(f"{k}: {v}" for k, v in rows.items())
        + ".",
        "",
    )
    _table(rep, ["case", "dtype", "engine", "checked", "ok", "worst", "s", "detail"])
    failures = 0
    for name, lq, lk, mask, mod in gpu_correct.cases(cfg["L"], cfg["device"]):
        for dtype in (torch.float32, torch.bfloat16):
            if dtype == torch.bfloat16 and name not in gpu_correct.BF16_CASES:
                continue
            if not rep.before(cfg["until"]["correctness"]):
                rep.add(_row(name, str(dtype)[6:], "skipped: time budget", "", "", "", "", ""))
                continue
            try:
                rows = gpu_correct.check_case(name, lq, lk, mask, mod, dtype, cfg["device"], D=cfg["D"])
            except Exception as e:  # a finding: record it and go on with the next case
                failures += 1
                rep.add(
                    _row(name, str(dtype)[6:], "error", "", "**FAIL**", "", "", f"`{type(e).__name__}: {str(e)[:200]}`")
                )
                continue
            for r in rows:
                failures += r["ok"] is False
                ok = {True: "ok", False: "**FAIL**", None: "-"}[r["ok"]]
                rep.add(
                    _row(r["case"], r["dtype"], r["engine"], r["checked"], ok, r["worst"], f"{r['s']:.1f}", r["detail"])
                )
    rep.add("", f"Correctness failures: **{failures}**.")


def speed(rep: Report, cfg: dict, sizes: list[int], until: float) -> None:
    for n in sizes:
        for mask in gpu_speed.MASKS:
            if not rep.before(until):
                rep.add(_row(mask, f"{n:,}", "skipped: time budget", "", "", "", "", "", ""))
                continue
            try:
                rows = gpu_speed.speed_rows(
                    mask,
                    n,
                    cfg["device"],
                    cfg["dtype"],
                    D=cfg["D_speed"],
                    H=cfg["H"],
                    grads=cfg["grads"],
                    peak=cfg["peak"],
                    budget_s=cfg["rep_budget"],
                )
            except Exception as e:  # a finding: record it and go on
                rep.add(_row(mask, f"{n:,}", "error", "", f"`{type(e).__name__}: {str(e)[:200]}`", "", "", "", ""))
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                continue
            for r in rows:
                if "note" in r:
                    rep.add(_row(mask, f"{n:,}", r["contender"], r["mode"], r["note"], "", "", "", ""))
                    continue
                frac = "" if r["peak"] is None else f"{100 * r['peak']:.1f} %"
                rep.add(
                    _row(
                        mask,
                        f"{n:,}",
                        r["contender"],
                        r["mode"],
                        f"{r['ms']:.2f}",
                        f"{r['first_s']:.1f}",
                        f"{r['pairs_per_s']:.3g}",
                        frac,
                        "",
                    )
                )


def model(rep: Report, cfg: dict, lengths: list[int], until: float) -> None:
    for n in lengths:
        if not rep.before(until):
            rep.add(_row(f"{n:,}", "skipped: time budget", "", "", "", ""))
            continue
        rows = gpu_speed.model_rows(
            n, cfg["device"], cfg["dtype"], model_cfg=cfg.get("model_cfg"), budget_s=cfg["rep_budget"]
        )
        by = {r["impl"]: r for r in rows}
        for r in rows:
            if "note" in r:
                rep.add(_row(f"{n:,}", r["impl"], r["note"], "", "", ""))
                continue
            ratio = ""
            if r["impl"] == "qkv" and "ms" in by.get("sdpa", {}):
                ratio = f"{by['sdpa']['ms'] / r['ms']:.2f}x"
            rep.add(_row(f"{n:,}", r["impl"], f"{r['ms']:.1f}", f"{r['first_s']:.1f}", ratio, r.get("max_diff", "")))


def _header(rep: Report, cfg: dict, argv: list[str]) -> None:
    dev = cfg["device"]
    name = torch.cuda.get_device_name(0) if torch.device(dev).type == "cuda" else platform.processor() or "cpu"
    try:
        import transformers

        tf = transformers.__version__
    except ImportError:
        tf = "absent"
    try:
        import triton

        tr = triton.__version__
    except ImportError:
        tr = "absent"
    import qkv

    rep.add(
        "# qkv on a GPU: correctness, attention speed, a transformers model",
        "",
        f"Command: `PYTHONPATH=src python3 bench/gpu.py {' '.join(argv)}`"
        + (" (SMOKE: CPU, tiny sizes; not a measurement)." if cfg["smoke"] else "."),
        f"Device: {name}; torch {torch.__version__}, triton {tr}, transformers {tf}, "
        f"python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs. Engines: {', '.join(qkv.implementations())}. Peak used for fractions: "
        f"{(cfg['peak'] or 0) / 1e12:.0f} TFLOP/s bf16. Budget {cfg['budget']:.0f} s.",
    )


def _config(args) -> dict:
    if args.smoke:
        return dict(
            device="cpu",
            dtype=torch.float32,
            L=200,
            D=16,
            D_speed=32,
            H=2,
            grads=False,
            sizes=[256, 512],
            lengths=[256],
            model_cfg=dict(
                hidden_size=64,
                intermediate_size=128,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                head_dim=16,
                sliding_window=128,
            ),
            peak=None,
            rep_budget=2.0,
            budget=args.budget,
            smoke=True,
            until=UNTIL,
        )
    return dict(
        device="cuda",
        dtype=torch.bfloat16,
        L=1000,
        D=64,
        D_speed=128,
        H=16,
        grads=True,
        sizes=[4096, 16384, 65536],
        lengths=[8192, 32768],
        model_cfg=None,
        peak=args.peak * 1e12,
        rep_budget=10.0,
        budget=args.budget,
        smoke=False,
        until=UNTIL,
    )


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="CPU, tiny sizes: check the script itself")
    p.add_argument("--budget", type=float, default=360.0, help="seconds for the whole run (default 360)")
    p.add_argument("--peak", type=float, default=PEAK_BF16 / 1e12, help="bf16 dense peak in TFLOP/s (default 790)")
    p.add_argument("--out", type=Path, help=f"report path (default {RESULTS.name}; with --smoke {SMOKE.name})")
    p.add_argument("--skip", nargs="*", default=[], choices=["correctness", "speed", "model"], help="sections to skip")
    p.add_argument("--sizes", type=int, nargs="+", help="speed sizes N (default 4096 16384 65536)")
    p.add_argument("--lengths", type=int, nargs="+", help="model lengths (default 8192 32768)")
    args = p.parse_args(argv)
    if not args.smoke and not torch.cuda.is_available():
        print("no CUDA device: run with --smoke for the CPU check of this script", file=sys.stderr)
        return 2
    args.out = args.out or (SMOKE if args.smoke else RESULTS)
    cfg = _config(args)
    cfg["sizes"] = args.sizes or cfg["sizes"]
    cfg["lengths"] = args.lengths or cfg["lengths"]
    for section in args.skip:  # a skipped section starts nothing (its rows say "skipped")
        cfg["until"] = {k: (0.0 if k.startswith(section) else v) for k, v in cfg["until"].items()}
    for name, value in (("recompile_limit", 256), ("accumulated_recompile_limit", 1024)):
        if hasattr(torch._dynamo.config, name):  # Flex called directly compiles once per mask and size too
            setattr(torch._dynamo.config, name, max(value, getattr(torch._dynamo.config, name)))
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 correctness is checked against ieee fp32
    rep = Report(args.out, args.budget)
    _header(rep, cfg, argv)
    if "correctness" not in args.skip:
        rep.section("correctness", correctness, cfg)
    speed_head = ["mask", "N", "contender", "mode", "ms", "first call s", "pairs/s", "of bf16 peak", ""]
    small, large = cfg["sizes"][:-1], cfg["sizes"][-1:]
    rep.add(
        "",
        "## 2. Speed: attention kernels",
        "",
        f"{cfg['dtype']}, B=1, H={cfg['H']}, D={cfg['D_speed']}; window {gpu_speed.WINDOW} keys; document: "
        f"{gpu_speed.DOCS} equal documents. Median of up to 5 calls after the first (compile, BlockMask).",
        "",
    )
    _table(rep, speed_head)
    rep.section(f"speed N={small}", speed, cfg, small, cfg["until"]["speed"])
    model_head = ["tokens", "attn_implementation", "ms", "first call s", "sdpa / qkv", "max abs diff"]
    rep.add(
        "",
        "## 3. Mistral-like transformers model, forward (no grad, no cache)",
        "",
        f"{gpu_speed.MODEL if not cfg['model_cfg'] else dict(gpu_speed.MODEL, **cfg['model_cfg'])}, "
        f"{cfg['dtype']}, batch 1, random init; median of up to 3 forwards after the first.",
        "",
    )
    _table(rep, model_head)
    rep.section(f"model {cfg['lengths'][:1]}", model, cfg, cfg["lengths"][:1], cfg["until"]["model"])
    rep.add("", "## 2b. Speed at the largest size", "")
    _table(rep, speed_head)
    rep.section(f"speed N={large}", speed, cfg, large, cfg["until"]["speed_large"])
    rep.add("", "## 3b. The model at the longest length", "")
    _table(rep, model_head)
    rep.section(f"model {cfg['lengths'][1:]}", model, cfg, cfg["lengths"][1:], cfg["until"]["model_large"])
    rep.add("", f"Total: {rep.elapsed():.0f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
