"""The ``qkv serve`` and ``qkv probe`` subcommands (their argument parsers and runners; see :mod:`qkv.cli`).

Each pair is one entry of :data:`qkv.cli.COMMANDS`; they share :mod:`qkv.cli._support` with the others.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from . import _support as s

__all__ = ["serve_args", "run_serve", "probe_args", "run_probe", "SERVE", "PROBE"]


# -------------------------------------------------------------------------------------------- serve
def serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="minilm", help="model name or checkpoint directory (default: minilm)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--max-chars", type=int, default=500, metavar="N", help="longest text accepted (default 500)")
    p.add_argument(
        "--max-tokens",
        type=int,
        default=64,
        metavar="N",
        help="most tokens traced (default 64; the page receives layers x (4 heads + 1) x tokens² numbers)",
    )
    p.add_argument("--max-items", type=int, default=64, metavar="N", help="most items per POST /api/probe (default 64)")
    p.add_argument("--workers", type=int, default=2, metavar="N", help="traces computed at once (default 2)")
    p.add_argument(
        "--queue", type=int, default=8, metavar="N", help="traces that may wait; more get 503 + Retry-After (default 8)"
    )
    p.add_argument(
        "--device",
        help="where the model runs: a torch device such as cuda, cuda:1 or mps (default: where it loads, the CPU)",
    )


def _on_device(args) -> None:
    """Load ``--model`` and move it to ``--device`` before the server starts.

    The lens keeps loaded models per name (:func:`qkv.lens.trace.load_model`), so the server, which loads
    ``--model`` by name, serves this moved copy.
    """
    import torch

    try:
        device = torch.device(args.device)
    except (RuntimeError, ValueError) as e:
        raise ValueError(
            f"--device: {args.device!r} is not a torch device ({e}); use e.g. cpu, cuda or cuda:0"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device}: this machine has no CUDA device; drop --device to run on the CPU")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(
            f"--device {args.device}: there are {torch.cuda.device_count()} CUDA device(s) "
            f"(cuda:0..cuda:{torch.cuda.device_count() - 1})"
        )
    with s.console(stderr=True).status(f"Loading {s.show(args.model)} onto {device} ..."):
        m = s.load(args)
        (m.model if hasattr(m, "model") and hasattr(m.model, "to") else m).to(device)


def run_serve(args, console) -> int:
    from ..serve import require_extra

    require_extra()
    from ..serve.limits import Limits
    from ..serve.server import serve

    try:
        limits = Limits(
            max_chars=args.max_chars,
            max_tokens=args.max_tokens,
            max_items=args.max_items,
            running=args.workers,
            waiting=args.queue,
        )
    except ValueError as e:
        flag = {
            "max_chars": "--max-chars",
            "max_tokens": "--max-tokens",
            "max_items": "--max-items",
            "running": "--workers",
            "waiting": "--queue",
        }
        raise ValueError(
            next(
                (
                    f"{v} must be at least {0 if k == 'waiting' else 1}"
                    for k, v in flag.items()
                    if f"Limits.{k} " in str(e)
                ),
                str(e),
            )
        ) from None
    if args.device is not None:
        _on_device(args)
    return serve(args.model, args.host, args.port, limits=limits, status=s.console(stderr=True).status)


# -------------------------------------------------------------------------------------------- probe
def probe_args(p: argparse.ArgumentParser) -> None:
    from ..lens.trace import MEASURES

    p.add_argument(
        "file",
        nargs="?",
        default="twins",
        help="items: a .jsonl in qkv's probe schema or WSCollection.xml (default: the shipped twin pairs)",
    )
    p.add_argument("--model", default="minilm", help="model name or checkpoint directory (default: minilm)")
    p.add_argument(
        "--measure",
        default="weights",
        choices=MEASURES,
        help="weights: softmax(q·k/√d); values: ‖α·f(v)‖ shares; rollout: through the layers (no heads)",
    )
    p.add_argument(
        "--pieces",
        default="sum",
        choices=("sum", "first"),
        help="a candidate split into word pieces: sum them (default) or take the first",
    )
    p.add_argument("--top", type=int, default=10, metavar="K", help="best heads listed (default 10)")
    p.add_argument("--rounds", type=int, default=1000, help="permutation-null draws (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the held-out splits and the null (default 0)")
    p.add_argument("--splits", type=int, default=21, help="held-out splits; the median one is reported (default 21)")
    p.add_argument("--batch-size", type=int, default=32, help="texts per forward pass (default 32)")
    p.add_argument("--json", metavar="PATH", help="also write the result as JSON (schema qkv.probe)")
    p.add_argument("--png", metavar="PATH", help="write the layer x head accuracy grid as PNG")
    from .intervene import add_causal_flag

    add_causal_flag(p)


def run_probe(args, console) -> int:
    from ..lens.probing import probe
    from ..view.probe_view import probe_renderable, save_grid

    for flag in ("top", "rounds", "batch_size", "splits"):
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}")
    s.check_outputs(args, ("json", "png"))
    if args.file != "twins" and not Path(args.file).is_file():
        raise ValueError(
            f"no such file: {args.file!r}; give a .jsonl (qkv's probe schema) or WSCollection.xml, or "
            f"no FILE for the shipped twin pairs"
        )
    with s.console(stderr=True).status(f"Probing {s.show(args.model)} ...") as status:
        result = probe(
            args.file,
            s.load(args),
            measure=args.measure,
            pieces=args.pieces,
            batch_size=args.batch_size,
            rounds=args.rounds,
            seed=args.seed,
            splits=args.splits,
            progress=lambda done, total: status.update(f"probe: traced {done}/{total} items"),
        )
    console.print(probe_renderable(result, top=args.top))
    if args.png:
        with s.writing("png", args.png):
            save_grid(result, args.png)
        console.print(f"wrote {s.show(args.png)}", style="dim", markup=False, highlight=False)
    causal = None
    if args.causal:
        from .intervene import run_causal

        causal = run_causal(args, s.load(args), console)
    if args.json:
        s.write_json(args.json, {**result.to_dict(), **({"causal": causal} if causal else {})}, console)
    return 0


SERVE = s.Command(
    "a local web app: type a sentence, click a token and a head, drag the softmax scaling", serve_args, run_serve
)
PROBE = s.Command(
    "does a head track the referent? per-head accuracy over a dataset, with honest statistics", probe_args, run_probe
)
