"""``qkv claims``: the essay's claims measured on a real model, each graded (its parser and runner)."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import _support as s

__all__ = ["COMMAND", "claims_args", "run_claims"]


def claims_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="minilm", help="model name or checkpoint directory (default: minilm)")
    p.add_argument("--plots", metavar="DIR", help="write PNG figures of claims 1-3 into DIR")
    p.add_argument("--json", metavar="PATH", help="also write the report as JSON (synthetic slope: variance_slope)")


def run_claims(args, console) -> int:
    from ..claims import evaluate
    from ..view.claims_view import FIGURES, report_renderable, save_figures

    if args.plots and Path(args.plots).exists() and not Path(args.plots).is_dir():
        raise ValueError(f"--plots wants a directory, but {args.plots!r} is a file")
    if args.json and not Path(args.json).resolve().parent.is_dir():
        raise ValueError(f"--json: the directory of {args.json!r} does not exist")
    with s.console(stderr=True).status(f"Measuring the essay's claims on {s.show(args.model)} ...") as status:
        model = s.load(args)
        report = evaluate(model, progress=lambda m: status.update(f"claims: {m}"))
        if args.plots:
            status.update(f"claims: drawing figures into {s.show(args.plots)}")
            with s.writing("plots", args.plots):
                save_figures(report, args.plots)
    console.print(report_renderable(report))
    if args.plots:
        console.print(
            f"wrote {', '.join(FIGURES)} into {s.show(args.plots)}", style="dim", markup=False, highlight=False
        )
    if args.json:
        with s.writing("json", args.json):
            Path(args.json).write_text(report.to_json(), encoding="utf-8")
        console.print(f"wrote {s.show(args.json)}", style="dim", markup=False, highlight=False)
    return 0


COMMAND = s.Command(
    "the essay's claims measured on a real model, each graded holds / partly / does not hold",
    claims_args,
    run_claims,
)
