"""The intervention subcommands: ``qkv ablate`` and ``qkv patch`` (and ``--causal`` of ``qkv probe``).

* ``qkv ablate TEXT --query Q --prefer A --over B [--how zero|mean|resample] [--source TEXT] [--reference FILE]
  [--positions] [--model DIR] [--top K] [--json F] [--png F]`` -- every head ablated in turn (one batched pass);
  the layer x head grid of effects on ``cos(final[Q], final[A]) - cos(final[Q], final[B])``, the top heads and one
  summary line.
* ``qkv patch TEXT_A TEXT_B --query Q --prefer A --over B [--step output|q|k|v|weights] [--attribution]
  [--model DIR] [--top K] [--json F] [--png F]`` -- activation patching between a clean (A) and a corrupted (B)
  text of one token count: per head the fraction of the metric difference restored (A -> B) and left (B -> A).

``--json`` (``"schema": "qkv.cli"``): ``{"command", "model", "text" | "texts", "query", "prefer", "over",
"metric": {"name", "base"}, "how", "heads": [{"layer", "head", "effect", ...}], "top", "summary", ...}``; for
``patch`` each head also has ``step``, ``restored`` and ``left`` and ``attribution`` holds the estimates' rank
agreement. Bad input prints one line and exits 2 (:mod:`qkv.cli`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from . import _support as s
from ._support import show, writing

__all__ = ["ablate_args", "run_ablate", "patch_args", "run_patch", "add_causal_flag", "run_causal"]

CLI_SCHEMA_VERSION = 1


def _metric_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--query", default="it", help="the token whose last hidden state is measured (default: it)")
    p.add_argument("--prefer", required=True, help="the token the query should lean toward (e.g. cat)")
    p.add_argument("--over", required=True, help="the token it is compared with (e.g. mat)")
    p.add_argument("--model", default="minilm", help="model name or checkpoint directory (default: minilm)")
    p.add_argument("--top", type=int, default=5, metavar="K", help="heads listed (default 5)")
    p.add_argument("--json", metavar="PATH", help="also write the result as JSON")
    p.add_argument("--png", metavar="PATH", help="write the layer x head grid as PNG")


def ablate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("text", help="the text")
    _metric_flags(p)
    p.add_argument("--how", default="zero", choices=("zero", "mean", "resample"), help="ablation method")
    p.add_argument("--source", metavar="TEXT", help="--how resample: the text whose head outputs replace the text's")
    p.add_argument(
        "--reference", metavar="FILE", help="--how mean: reference texts, one per line (default: the twin texts)"
    )
    p.add_argument("--positions", action="store_true", help="also ablate each token position separately")


def patch_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("text_a", help="the clean text")
    p.add_argument("text_b", help="the corrupted text (same token count)")
    _metric_flags(p)
    p.add_argument("--step", default="output", choices=("output", "q", "k", "v", "weights"), help="step patched")
    p.add_argument("--attribution", action="store_true", help="also attribution patching and its rank agreement")


def _prepare(args, texts: list[str]):

    if args.top < 1:
        raise ValueError(f"--top must be at least 1, got {args.top}")
    for t in texts:
        if not t.strip():
            raise ValueError('the text is empty; give a sentence, e.g. "The cat sat on the mat because it was tired."')
    s.check_outputs(args, ("json", "png"))
    return s.load(args)


def _doc(command: str, args, **fields) -> dict:
    return {
        "schema": "qkv.cli",
        "version": CLI_SCHEMA_VERSION,
        "command": command,
        "query": args.query,
        "prefer": args.prefer,
        "over": args.over,
        **fields,
    }


def _outputs(args, console, grid, title: str, doc: dict, layers=None) -> None:
    from .view.effects_view import save_grid_png

    if args.png:
        with writing("png", args.png):
            save_grid_png(grid, args.png, title, layers)
        console.print(f"wrote {show(args.png)}", style="dim", markup=False, highlight=False)
    if args.json:
        s.write_json(args.json, doc, console)


def _reference(path: str | None) -> list[str] | None:
    if path is None:
        return None
    if not Path(path).is_file():
        raise ValueError(f"--reference: no such file {path!r}; give a text file with one reference text per line")
    texts = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    if not texts:
        raise ValueError(f"--reference: {path!r} holds no text; expected one reference text per line")
    return texts


def run_ablate(args, console) -> int:
    from .lens.effects import preference
    from .lens.sweeps import ablation_sweep
    from .view.effects_view import grid_table, top_table

    if args.how == "resample" and not args.source:
        raise ValueError("--how resample needs --source TEXT (a text of the same token count)")
    model = _prepare(args, [args.text])
    over = _reference(args.reference)
    with s.console(stderr=True).status(f"Ablating every head of {show(args.model)} ..."):
        r = ablation_sweep(
            args.text,
            preference(args.query, args.prefer, args.over),
            model,
            how=args.how,
            over=over,
            source=args.source,
            positions=args.positions,
        )
    title = f"{r.how}-ablating each head: change of {r.metric} (base {r.base:+.4f}) on {r.model}"
    console.print(grid_table(r.grid(), title, r.layers))
    console.print(top_table(r.top(args.top), f"Top {args.top} heads by |effect|"))
    console.print(r.summary(), style="bold", markup=False, highlight=False)
    _outputs(args, console, r.grid(), title, _doc("ablate", args, **r.to_dict()), r.layers)
    return 0


def run_patch(args, console) -> int:
    import numpy as np

    from .lens.effects import preference
    from .lens.sweeps import attribution_sweep, patch_sweep, rank_agreement
    from .view.effects_view import grid_table, top_table

    model = _prepare(args, [args.text_a, args.text_b])
    metric = preference(args.query, args.prefer, args.over)
    with s.console(stderr=True).status(f"Patching every head of {show(args.model)} ..."):
        r = patch_sweep(args.text_a, args.text_b, metric, model, steps=[args.step])
        est = agree = None
        if args.attribution and args.step in ("output", "q", "k", "v"):
            est = attribution_sweep(args.text_a, args.text_b, metric, model, step=args.step)
            agree = rank_agreement(est, r, args.step)
    g = r.denoise[args.step]
    title = (
        f"{args.step} patched clean -> corrupted: fraction of the {r.metric} difference restored "
        f"(clean {r.clean_value:+.4f}, corrupted {r.corrupted_value:+.4f})"
    )
    console.print(grid_table(g, title, fmt="+.2f"))
    order = np.argsort(-np.abs(g).ravel(), kind="stable")[: args.top]
    H = g.shape[1]
    console.print(top_table([(k // H, k % H, float(g.ravel()[k])) for k in order], "Top heads", "restored"))
    k = int(order[0])
    summary = (
        f"{r.metric} is {r.clean_value:+.4f} on the clean text and {r.corrupted_value:+.4f} on the corrupted one; "
        f"patching one head's {args.step} restores at most {g.ravel()[k]:+.0%} of the difference (L{k // H}H{k % H}); "
        f"corrupting one head in the clean run leaves between {r.noise[args.step].min():.0%} and "
        f"{r.noise[args.step].max():.0%} of it"
    )
    if agree is not None:
        summary += (
            f"; attribution patching ranks heads with Spearman {agree['denoise']:+.2f} (restored) / "
            f"{agree['noise']:+.2f} (left) against exact patching"
        )
    console.print(summary, style="bold", markup=False, highlight=False)
    doc = _doc("patch", args, **r.to_dict(), step=args.step, summary=summary, attribution=agree)
    _outputs(args, console, g, title, doc)
    return 0


def add_causal_flag(p: argparse.ArgumentParser) -> None:
    """``--causal`` for ``qkv probe``."""
    p.add_argument(
        "--causal",
        action="store_true",
        help="also ablate every head on every item: effect on the output preference, held out, and its rank "
        "correlation with the weight preference (JSON under 'causal')",
    )


def run_causal(args, model, console) -> dict:
    """The causal probe of ``qkv probe --causal``: prints its table and summary, returns its JSON."""
    from .lens.causal_probe import causal_probe
    from .view.effects_view import causal_table

    with s.console(stderr=True).status("Causal probe: ablating every head on every item ...") as status:
        r = causal_probe(
            args.file,
            model,
            seed=args.seed,
            splits=args.splits,
            progress=lambda done, total: status.update(f"causal probe: {done}/{total} items"),
        )
    console.print(causal_table(r, top=args.top))
    console.print(r.summary(), style="bold", markup=False, highlight=False)
    return r.to_dict()


ABLATE = s.Command(
    "ablate every head in turn: the effect on the query's preference in the model's output", ablate_args, run_ablate
)
PATCH = s.Command(
    "activation patching between two texts: how much of the difference each head restores", patch_args, run_patch
)
