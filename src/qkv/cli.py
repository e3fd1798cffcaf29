"""The ``qkv`` command: see attention work in a real model.

Subcommands live in :data:`COMMANDS` (name -> :class:`Command`: help, ``add_arguments(parser)``,
``run(args, console) -> int``); adding one is adding a small pair of functions and one entry.

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

DEFAULT_TEXT = "The cat sat on the mat because it was tired."
DEFAULT_QUERY = "it"
CLI_SCHEMA_VERSION = 1
MEASURES = ("weights", "values", "rollout")


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


def _trace(text: str, args):
    """Trace ``text`` with a spinner on stderr while the model loads and runs.

    When most of the text is unknown to the model's vocabulary (Chinese text through the English MiniLM),
    a note on stderr says so and how to pick another model.
    """
    from .lens.trace import trace

    if not text.strip():
        raise ValueError(f'the text is empty; give a sentence, e.g. qkv explain "{DEFAULT_TEXT}"')
    with _console(stderr=True).status(f"Loading {show(args.model)} and recording attention ..."):
        t = trace(text, _load(args), truncate=args.truncate)
    if t.mostly_unknown:
        print(f"qkv: note: {cli_words(t.vocabulary_note())}", file=sys.stderr)
    return t


def _write_json(path: str, doc: dict, console) -> None:
    with writing("json", path):
        Path(path).write_text(json.dumps(doc, indent=1, ensure_ascii=False), encoding="utf-8")
    console.print(f"wrote {show(path)}", style="dim", markup=False, highlight=False)


def _doc(command: str, t, **fields) -> dict:
    return {"schema": "qkv.cli", "version": CLI_SCHEMA_VERSION, "command": command, "model": t.model["name"], **fields}


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


def _pair(args) -> tuple[str | None, str | None]:
    if (args.prefer is None) != (args.over is None):
        raise ValueError("give both --prefer and --over (e.g. --prefer cat --over mat), or neither")
    return args.prefer, args.over


def _common(p: argparse.ArgumentParser, measures=MEASURES) -> None:
    p.add_argument("--model", default="minilm", help="model name or checkpoint directory (default: minilm)")
    p.add_argument(
        "--query",
        default=DEFAULT_QUERY,
        help="the token whose attention is shown: a token ('it'), the n-th one ('it@2') or an index",
    )
    p.add_argument(
        "--measure",
        default="weights",
        choices=measures,
        help="weights: softmax(q·k/√d); values: ‖α·f(v)‖ (what arrives); rollout: through the layers",
    )
    p.add_argument("--json", metavar="PATH", help="also write the result as JSON")
    p.add_argument("--truncate", action="store_true", help="keep the first tokens of a text too long for the model")


def _query_index(t, query: str) -> int:
    """A token string first (the text may contain "2"), else an integer index."""
    try:
        return t.index(query)
    except ValueError as e:
        if query.strip().lstrip("-").isdigit():
            return t.index(int(query))
        if t.mostly_unknown:
            raise ValueError(
                f"token {query!r} is not among the tokens the model read ({' '.join(t.tokens)}); see the note above"
            ) from None
        if t.unknown:
            raise
        raise ValueError(f"{e} (choose the query with --query)") from None


# ------------------------------------------------------------------------------------------- explain
def _explain_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("text", nargs="?", default=DEFAULT_TEXT, help=f"the text (default: {DEFAULT_TEXT!r})")
    _common(p)
    p.add_argument("--layer", type=int, help="layer of the breakdown (default: the best head's layer)")
    p.add_argument("--head", type=int, help="head shown per layer and in the breakdown (default: the best)")
    p.add_argument("--top", type=int, default=5, metavar="K", help="tokens shown per layer (default 5)")
    p.add_argument("--prefer", help="a token the query may prefer (with --over); default for the default sentence: cat")
    p.add_argument("--over", help="the token it is compared with (default for the default sentence: mat)")
    p.add_argument("--html", metavar="PATH", help="write one self-contained HTML page")
    p.add_argument("--png", metavar="PATH", help="write a heatmap of the breakdown head")


def _choose_head(t, i: int, args, prefer, over) -> tuple[int, int]:
    """The head of the breakdown: the lens's rule (:func:`qkv.lens.heads.choose_head`) under --layer/--head."""
    from .lens.heads import choose_head

    return choose_head(t, i, layer=args.layer, head=args.head, measure=args.measure, prefer=prefer, over=over)


def _run_explain(args, console) -> int:
    from .view.terminal import attention_summary, breakdown_table, head_caveat, preference_summary, top_table

    if args.top < 1:
        raise ValueError(f"--top must be at least 1, got {args.top}")
    if args.measure == "rollout" and args.head is not None:
        raise ValueError("rollout combines all heads of a layer; drop --head or use --measure weights/values")
    prefer, over = _pair(args)
    _check_outputs(args)
    if prefer is None and args.text == DEFAULT_TEXT and args.query == DEFAULT_QUERY:
        prefer, over = "cat", "mat"  # the essay's claim: "it" should match "the cat" more than "the mat"
    t = _trace(args.text, args)
    i = _query_index(t, args.query)
    if args.layer is not None:
        t.check_layer(args.layer)
    if args.head is not None:
        t.check_head(args.head)
    if prefer is not None:
        for name, tok in (("--prefer", prefer), ("--over", over)):
            try:
                t.index(tok)
            except ValueError as e:
                raise ValueError(f"{name}: {e}") from None
        if t.index(prefer) == t.index(over):
            raise ValueError(f"--prefer and --over name the same token {prefer!r}; pick two different tokens")
    layer, head = _choose_head(t, i, args, prefer, over)

    console.print(top_table(t, i, measure=args.measure, k=args.top, head=args.head, prefer=prefer, over=over))
    console.print()
    console.print(breakdown_table(t, i, layer, head))
    summary = (
        preference_summary(t, i, prefer, over, args.measure)
        if prefer is not None
        else attention_summary(t, i, args.measure)
    )
    console.print()
    console.print(summary, style="bold", markup=False, highlight=False)
    caveat = head_caveat(t, i, prefer, layer, head) if prefer is not None else None
    if caveat:
        console.print(caveat, style="dim", markup=False, highlight=False)

    if args.html:
        from .view.html import write_html

        with writing("html", args.html):
            write_html(t, args.html, query=i, layer=layer, head=head, measure=args.measure, summary=summary)
        console.print(
            f"wrote {show(args.html)} (open it in a browser; it needs no network)",
            style="dim",
            markup=False,
            highlight=False,
        )
    if args.png:
        from .view.png import save_heatmap

        with writing("png", args.png):
            save_heatmap(t, args.png, layer, head, args.measure, query=i)
        console.print(f"wrote {show(args.png)}", style="dim", markup=False, highlight=False)
    if args.json:
        layers = []
        for n in range(t.num_layers):
            h = (
                None
                if args.measure == "rollout"
                else (
                    args.head
                    if args.head is not None
                    else _choose_head(t, i, argparse.Namespace(layer=n, head=None, measure=args.measure), prefer, over)[
                        1
                    ]
                )
            )
            layers.append(
                {
                    "layer": n,
                    "mean_top": [a._asdict() for a in t.top(i, args.top, n, None, args.measure)],
                    "head": h,
                    "head_top": [] if h is None else [a._asdict() for a in t.top(i, args.top, n, h, args.measure)],
                }
            )
        doc = _doc(
            "explain",
            t,
            text=t.text,
            measure=args.measure,
            query={"index": i, "token": t.tokens[i]},
            prefer=prefer,
            over=over,
            layers=layers,
            breakdown={"layer": layer, "head": head, "rows": [r._asdict() for r in t.breakdown(i, layer, head)]},
            summary=summary,
            caveat=caveat,
            trace=t.to_dict(),
        )
        _write_json(args.json, doc, console)
    return 0


# ------------------------------------------------------------------------------------------- heads
def _heads_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("text", help="the text")
    _common(p, measures=("weights", "values"))
    p.add_argument("--prefer", required=True, help="the token the query may prefer (e.g. cat)")
    p.add_argument("--over", required=True, help="the token it is compared with (e.g. mat)")
    p.add_argument("--top", type=int, default=10, metavar="K", help="heads shown at each end (default 10)")


def _run_heads(args, console) -> int:
    from .view.terminal import heads_table, preference_summary

    if args.top < 1:
        raise ValueError(f"--top must be at least 1, got {args.top}")
    _check_outputs(args)
    t = _trace(args.text, args)
    i = _query_index(t, args.query)
    prefs = t.heads(i, args.prefer, args.over, args.measure)
    a, b = t.tokens[t.index(args.prefer)], t.tokens[t.index(args.over)]
    console.print(heads_table(t, prefs, a, b, limit=args.top))
    summary = preference_summary(t, i, args.prefer, args.over, args.measure)
    console.print(summary, style="bold", markup=False, highlight=False)
    if args.json:
        _write_json(
            args.json,
            _doc(
                "heads",
                t,
                text=t.text,
                measure=args.measure,
                query=t.tokens[i],
                prefer=a,
                over=b,
                heads=[p._asdict() for p in prefs],
                summary=summary,
            ),
            console,
        )
    return 0


# ------------------------------------------------------------------------------------------- compare
def _compare_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("text_a", help="the first text, e.g. '... because it was tired.'")
    p.add_argument("text_b", help="the same text with one word changed, e.g. '... because it was soft.'")
    _common(p, measures=("weights", "values"))
    p.add_argument("--prefer", required=True, help="a token in both texts (e.g. cat)")
    p.add_argument("--over", required=True, help="another token in both texts (e.g. mat)")
    p.add_argument("--top", type=int, default=12, metavar="K", help="heads listed (default 12)")


def _run_compare(args, console) -> int:
    from rich.text import Text

    from .view.terminal import compare_table, head_flips, preference_summary

    if args.top < 1:
        raise ValueError(f"--top must be at least 1, got {args.top}")
    _check_outputs(args)
    traces, rankings, summaries = [], [], []
    for label, text in (("A", args.text_a), ("B", args.text_b)):
        if not text.strip():
            raise ValueError(f"text {label} is empty; give two sentences that differ in one word")
        t = _trace(text, args)
        try:
            i = _query_index(t, args.query)
            rankings.append(t.heads(i, args.prefer, args.over, args.measure))
        except ValueError as e:
            raise ValueError(f"text {label}: {e}") from None
        traces.append(t)
        summaries.append(preference_summary(t, i, args.prefer, args.over, args.measure))
    flips = head_flips(*rankings)
    a, b = traces[0].tokens[traces[0].index(args.prefer)], traces[0].tokens[traces[0].index(args.over)]
    for label, t, s in zip("AB", traces, summaries):
        console.print(Text(f"{label}: {t.text}", style="bold"))
        console.print(Text(f"   {s}"))
    console.print()
    console.print(compare_table(flips, a, b, limit=args.top))
    to_b = [f for f in flips if f.flipped and f.diff_a > 0]
    to_a = [f for f in flips if f.flipped and f.diff_a < 0]
    n = len(flips)

    def names(fs):
        return ", ".join(f"L{f.layer}H{f.head}" for f in fs[:6]) + (" ..." if len(fs) > 6 else "")

    summary = (
        f"{len(to_b)} of {n} heads switch from '{a}' to '{b}'"
        + (f" ({names(to_b)})" if to_b else "")
        + f" and {len(to_a)} from '{b}' to '{a}'"
        + (f" ({names(to_a)})" if to_a else "")
        + f"; the other {n - len(to_a) - len(to_b)} keep their preference."
    )
    console.print(summary, style="bold", markup=False, highlight=False)
    if args.json:
        _write_json(
            args.json,
            _doc(
                "compare",
                traces[0],
                texts=[args.text_a, args.text_b],
                measure=args.measure,
                query=args.query,
                prefer=a,
                over=b,
                heads=[{**f._asdict(), "flipped": f.flipped} for f in flips],
                summaries=summaries,
                summary=summary,
            ),
            console,
        )
    return 0


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
        _explain_args,
        _run_explain,
    ),
    "heads": Command("rank heads by how much a token prefers one token over another", _heads_args, _run_heads),
    "compare": Command(
        "minimal pairs: which heads change preference when one word changes", _compare_args, _run_compare
    ),
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
