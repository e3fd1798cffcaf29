"""The ``qkv`` command: see attention work in a real model.

Subcommands live in :data:`COMMANDS` (name -> :class:`Command`: help, ``add_arguments(parser)``,
``run(args, console) -> int``); adding one is adding a small pair of functions and one entry. The pairs of
``explain``, ``heads`` and ``compare`` are in :mod:`qkv.cli_explain`, those of ``serve`` and ``probe`` in
:mod:`qkv.cli_apps`; ``claims`` and ``bench`` are here.

* ``qkv explain [TEXT] [--query it] [--layer L] [--head H] [--measure weights|values|rollout] [--top K]
  [--prefer X --over Y] [--html PATH] [--json PATH] [--png PATH]``
* ``qkv heads TEXT --query it --prefer cat --over mat``
* ``qkv compare TEXT_A TEXT_B --query it --prefer cat --over mat``
* ``qkv probe [FILE] [--model M] [--measure weights|values|rollout] [--pieces sum|first] [--top K]
  [--json PATH] [--png PATH]`` -- does a head track the referent, over a dataset (qkv's JSONL or the WSC XML;
  no FILE: the shipped twin pairs); ``--json`` writes :meth:`qkv.lens.probing.ProbeResult.to_dict`
  (``"schema": "qkv.probe"``)
* ``qkv bench [--quick] [--n N ...] [--case C ...]`` -- the attention benchmark (``python -m bench``)
* ``qkv claims [--model M] [--plots DIR] [--json PATH]`` -- the essay's claims measured, with verdicts
  (``--json`` writes :meth:`qkv.claims.ClaimsReport.to_dict`, ``"schema": "qkv.claims"``)
* ``qkv serve [--model M] [--host 127.0.0.1] [--port 8000]`` -- a local web app and JSON API (:mod:`qkv.serve`,
  extra ``qkv[serve]``)

Bad input (empty text, a token not in the text, an out-of-range layer or head, a text too long for
the model, text whose bytes are not UTF-8, a model that cannot be loaded, an output that cannot be
written -- disk full, no permission, I/O error; see :mod:`qkv.cli_errors`) prints one line
``qkv <command>: error: ...`` on stderr (argparse's format, e.g.
``qkv explain: error: layer 6 is out of range; ...``) and exits with status 2.
Messages use the command's flags (``--truncate``, ``--png``); the library says the same in Python
terms (``truncate=True``, ``save_heatmap``), mapped by :data:`FLAG_WORDS`.
A text mostly unknown to the model's vocabulary (Chinese through the English MiniLM: ``[UNK]``) gets a
``qkv: note: ...`` line on stderr that says so and points to ``--model``.

JSON written by ``--json`` (``"schema": "qkv.cli"``, ``"version": 1``)::

    explain: {"schema", "version", "command": "explain", "text", "model", "measure",
              "query": {"index", "token"}, "prefer": str|null, "over": str|null,
              "layers": [{"layer", "mean_top": [{"index", "token", "value"}],
                          "head": int|null, "head_top": [{"index", "token", "value"}]}],
              "breakdown": {"layer", "head", "rows": [{"index", "token", "score", "scaled", "weight",
                                                      "value_norm", "value_share"}]},
              "summary": str, "caveat": str|null, "trace": <Trace.to_dict(), see qkv.lens.trace>}
    heads:   {"schema", "version", "command": "heads", "text", "model", "measure", "query", "prefer", "over",
              "heads": [{"layer", "head", "prefer", "over", "diff"}] (best first), "summary"}
    compare: {"schema", "version", "command": "compare", "texts": [A, B], "model", "measure", "query",
              "prefer", "over", "heads": [{"layer", "head", "diff_a", "diff_b", "flipped"}],
              "summaries": [str, str], "summary": str}
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable, NamedTuple

from .cli_apps import probe_args, run_probe, run_serve, serve_args
from .cli_errors import FLAG_WORDS, check_text_args, cli_words, os_reason, show, writing
from .cli_explain import (
    CLI_SCHEMA_VERSION,
    DEFAULT_QUERY,
    DEFAULT_TEXT,
    compare_args,
    explain_args,
    heads_args,
    run_compare,
    run_explain,
    run_heads,
)
from .cli_intervene import ablate_args, patch_args, run_ablate, run_patch

__all__ = [
    "main",
    "build_parser",
    "COMMANDS",
    "Command",
    "DEFAULT_TEXT",
    "DEFAULT_QUERY",
    "CLI_SCHEMA_VERSION",
    "FLAG_WORDS",
]


class Command(NamedTuple):
    """One subcommand: a help line, a function adding its arguments, and a function running it."""

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, object], int]


# ------------------------------------------------------------------------------------------- helpers
def _console(stderr: bool = False):
    from rich.console import Console

    probe = Console(stderr=stderr)
    return probe if probe.is_terminal else Console(stderr=stderr, width=120)


def _load(args):
    """The model of ``--model``; every failure (a damaged checkpoint included) as a ValueError naming the flag."""
    from .lens.trace import load_model

    try:
        return load_model(args.model)
    except ValueError as e:
        raise ValueError(f"--model: {e}") from None
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception as e:  # torch / safetensors / tokenizers errors from a damaged checkpoint
        raise ValueError(
            f"--model: cannot load '{show(args.model)}' ({type(e).__name__}: {e}); the checkpoint is "
            "damaged or of an unsupported kind: restore its files or pass another --model"
        ) from None


def _write_json(path: str, doc: dict, console) -> None:
    with writing("json", path):
        Path(path).write_text(json.dumps(doc, indent=1, ensure_ascii=False), encoding="utf-8")
    console.print(f"wrote {show(path)}", style="dim", markup=False, highlight=False)


def _check_outputs(args, flags=("json", "html", "png")) -> None:
    """Fail before the model loads if an output file cannot be written where asked."""
    for flag in flags:
        path = getattr(args, flag, None)
        if path is None:
            continue
        p = Path(path)
        if p.is_dir():
            raise ValueError(f"--{flag} wants a file path, but {path!r} is a directory")
        if not p.resolve().parent.is_dir():
            raise ValueError(f"--{flag}: the directory of {path!r} does not exist; create it or pick another path")
        if flag == "png" and p.suffix.lower() != ".png":
            raise ValueError(f"--png wants a path ending in .png, got {path!r}")


# ------------------------------------------------------------------------------------------- claims
def _claims_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="minilm", help="model name or checkpoint directory (default: minilm)")
    p.add_argument("--plots", metavar="DIR", help="write PNG figures of claims 1-3 into DIR")
    p.add_argument("--json", metavar="PATH", help="also write the report as JSON (synthetic slope: variance_slope)")


def _run_claims(args, console) -> int:
    from .claims import evaluate
    from .view.claims_view import FIGURES, report_renderable, save_figures

    if args.plots and Path(args.plots).exists() and not Path(args.plots).is_dir():
        raise ValueError(f"--plots wants a directory, but {args.plots!r} is a file")
    if args.json and not Path(args.json).resolve().parent.is_dir():
        raise ValueError(f"--json: the directory of {args.json!r} does not exist")
    with _console(stderr=True).status(f"Measuring the essay's claims on {show(args.model)} ...") as status:
        model = _load(args)
        report = evaluate(model, progress=lambda m: status.update(f"claims: {m}"))
        if args.plots:
            status.update(f"claims: drawing figures into {show(args.plots)}")
            with writing("plots", args.plots):
                save_figures(report, args.plots)
    console.print(report_renderable(report))
    if args.plots:
        console.print(f"wrote {', '.join(FIGURES)} into {show(args.plots)}", style="dim", markup=False, highlight=False)
    if args.json:
        with writing("json", args.json):
            Path(args.json).write_text(report.to_json(), encoding="utf-8")
        console.print(f"wrote {show(args.json)}", style="dim", markup=False, highlight=False)
    return 0


# -------------------------------------------------------------------------------------------- bench
def _bench_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "bench_args",
        nargs="*",
        metavar="ARG",
        help="arguments of the attention benchmark, passed through (`qkv bench --help` lists them)",
    )


def _bench_root() -> Path:
    """The source checkout holding ``bench/`` (benchmarks are not part of the installed package)."""
    for root in (Path(__file__).resolve().parents[2], Path.cwd()):
        if (root / "bench" / "attention.py").is_file():
            return root
    raise ValueError(
        "qkv bench runs the benchmarks of a source checkout (bench/ is not installed); "
        "run it from the qkv repository or install qkv there with `pip install -e .`"
    )


def _run_bench(args, console) -> int:
    import subprocess

    return subprocess.call([sys.executable, "-m", "bench", *args.bench_args], cwd=_bench_root())


COMMANDS: dict[str, Command] = {
    "explain": Command(
        "show what a token attends to, layer by layer, and the step-by-step chain of one head",
        explain_args,
        run_explain,
    ),
    "heads": Command("rank heads by how much a token prefers one token over another", heads_args, run_heads),
    "compare": Command("minimal pairs: which heads change preference when one word changes", compare_args, run_compare),
    "claims": Command(
        "the essay's claims measured on a real model, each graded holds / partly / does not hold",
        _claims_args,
        _run_claims,
    ),
    "serve": Command(
        "a local web app: type a sentence, click a token and a head, drag the softmax scaling", serve_args, run_serve
    ),
    "probe": Command(
        "does a head track the referent? per-head accuracy over a dataset, with honest statistics",
        probe_args,
        run_probe,
    ),
    "ablate": Command(
        "ablate every head in turn: the effect on the query's preference in the model's output", ablate_args, run_ablate
    ),
    "patch": Command(
        "activation patching between two texts: how much of the difference each head restores", patch_args, run_patch
    ),
    "bench": Command(
        "benchmark qkv's attention against its peers (python -m bench in the source checkout)", _bench_args, _run_bench
    ),
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one sub-parser per entry of :data:`COMMANDS`."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="qkv", description="Attention - queries, keys, values - visible in real models."
    )
    parser.add_argument("--version", action="version", version=f"qkv {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, cmd in COMMANDS.items():
        p = sub.add_parser(name, help=cmd.help, description=cmd.help)
        cmd.add_arguments(p)
        p.set_defaults(_run=cmd.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``qkv`` command; returns the exit status (0 ok, 2 bad input)."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:  # every option after `bench` belongs to the benchmark's own parser
        args = argparse.Namespace(command="bench", bench_args=argv[1:], _run=_run_bench)
    else:
        args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        check_text_args(args)
        return args._run(args, _console())
    except ValueError as e:
        return _error(args.command, cli_words(str(e)) or type(e).__name__)
    except OSError as e:  # not one of the outputs (those are named by _writing): e.g. stdout on a full disk
        where = f"read or write '{show(e.filename)}'" if e.filename else "write the output (stdout)"
        return _error(args.command, f"cannot {where}: {os_reason(e)}")
    except KeyboardInterrupt:
        print("qkv: interrupted", file=sys.stderr)
        return 130


def _error(command: str, message: str) -> int:
    """Print ``qkv <command>: error: <message>`` (argparse's format) on stderr; return the status 2."""
    try:
        print(f"qkv {command}: error: {message}", file=sys.stderr)
    except OSError:  # stderr itself is gone: the status still says it
        pass
    return 2


if __name__ == "__main__":
    sys.exit(main())
