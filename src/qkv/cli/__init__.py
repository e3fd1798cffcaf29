"""The ``qkv`` command: see attention work in a real model.

A package: this module is the entry point (``qkv = "qkv.cli:main"``, ``python -m qkv``, ``python -m qkv.cli``);
subcommands live in :data:`COMMANDS` (name -> :class:`Command`: help, ``add_arguments(parser)``,
``run(args, console) -> int``); adding one is adding a small pair of functions and one entry. The pairs of
``explain``, ``heads`` and ``compare`` are in :mod:`qkv.cli.explain`, those of ``serve`` and ``probe`` in
:mod:`qkv.cli.apps`, ``claims`` in :mod:`qkv.cli.claims`, ``bench`` in :mod:`qkv.cli.bench`; what they share
(console, loading ``--model``, outputs, error words) is :mod:`qkv.cli._support`. Command modules import the
support module, never this one.

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
* ``qkv serve [--model M] [--host 127.0.0.1] [--port 8000] [--device cuda]`` -- a local web app and JSON API
  (:mod:`qkv.serve`, extra ``qkv[serve]``)

The query (``--query``; default: the text's first pronoun, else its first token) and the ``--prefer``/``--over``
pair resolve by :meth:`qkv.lens.trace.Trace.resolve`, the rule ``--html`` and ``qkv serve`` use too: a token in
any case, ``it@2`` or an index name the same token, and on the default sentence the pair defaults to cat/mat
whenever the query is its "it". A flip in ``qkv compare`` is any change of sign of ``prefer - over``; the
summary also counts the flips of at least 0.05 on both sides, the margin ``qkv claims`` calls a preference.

Bad input (empty text, a token not in the text, an out-of-range layer or head, a text too long for
the model, text whose bytes are not UTF-8, a model that cannot be loaded, an output that cannot be
written -- disk full, no permission, I/O error; see :mod:`qkv.cli._support`) prints one line
``qkv <command>: error: ...`` on stderr (argparse's format, e.g.
``qkv explain: error: layer 6 is out of range; ...``) and exits with status 2.
Messages use the command's flags (``--truncate``, ``--png``); the library says the same in Python
terms (``truncate=True``, ``save_heatmap``), mapped by :data:`FLAG_WORDS`.
A failure inside qkv while loading (not a damaged checkpoint) prints its traceback, then
``qkv <command>: internal error: ...`` and exits with status 1. Ctrl-C at any moment (start-up imports
included) prints ``qkv: interrupted`` and exits with status 130.
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
              "prefer", "over", "heads": [{"layer", "head", "diff_a", "diff_b", "flipped", "clear"}],
              "summaries": [str, str], "summary": str}
"""

from __future__ import annotations

import argparse
import signal
import sys

from . import _support, apps, bench, claims, explain, intervene
from ._support import FLAG_WORDS, Command, InternalError, check_text_args, cli_words, os_reason, show
from .explain import CLI_SCHEMA_VERSION

__all__ = [
    "main",
    "build_parser",
    "COMMANDS",
    "Command",
    "DEFAULT_TEXT",
    "DEFAULT_QUERY",
    "CLI_SCHEMA_VERSION",
    "FLAG_WORDS",
    "cli_words",
]

COMMANDS: dict[str, Command] = {
    "explain": explain.EXPLAIN,
    "heads": explain.HEADS,
    "compare": explain.COMPARE,
    "claims": claims.COMMAND,
    "serve": apps.SERVE,
    "probe": apps.PROBE,
    "ablate": intervene.ABLATE,
    "patch": intervene.PATCH,
    "bench": bench.COMMAND,
}


def __getattr__(name: str):
    # The essay's sentence lives in the lens; importing it only when asked keeps `import qkv.cli` light.
    if name in ("DEFAULT_TEXT", "DEFAULT_QUERY"):
        from ..lens.essay import ESSAY_QUERY, ESSAY_SENTENCE

        return ESSAY_SENTENCE if name == "DEFAULT_TEXT" else ESSAY_QUERY
    raise AttributeError(f"module 'qkv.cli' has no attribute {name!r}")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one sub-parser per entry of :data:`COMMANDS`."""
    from .. import __version__

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
    """Run the ``qkv`` command; returns the exit status (0 ok, 1 a failure inside qkv, 2 bad input, 130 Ctrl-C)."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        return interrupted()


def interrupted() -> int:
    """Say ``qkv: interrupted`` (once, whatever else is pressed) and return the status 130."""
    try:  # a second Ctrl-C while saying so must not turn this line into a traceback
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: signals are not ours to change
        previous = None
    try:
        print("qkv: interrupted", file=sys.stderr, flush=True)
    except OSError:
        pass
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    return 130


def _main(argv: list[str] | None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:  # every option after `bench` belongs to the benchmark's own parser
        args = argparse.Namespace(command="bench", bench_args=argv[1:], _run=bench.run_bench)
        parser = None
    else:
        parser = build_parser()
        args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        check_text_args(args)
        return args._run(args, _support.console())
    except ValueError as e:
        return _error(args.command, cli_words(str(e)) or type(e).__name__)
    except InternalError as e:
        import traceback

        if e.__cause__ is not None:
            traceback.print_exception(e.__cause__, file=sys.stderr)
        _error(args.command, str(e), kind="internal error")
        return 1
    except OSError as e:  # not one of the outputs (those are named by _support.writing): e.g. stdout on a full disk
        where = f"read or write '{show(e.filename)}'" if e.filename else "write the output (stdout)"
        return _error(args.command, f"cannot {where}: {os_reason(e)}")


def _error(command: str, message: str, kind: str = "error") -> int:
    """Print ``qkv <command>: error: <message>`` (argparse's format) on stderr; return the status 2."""
    try:
        print(f"qkv {command}: {kind}: {message}", file=sys.stderr)
    except OSError:  # stderr itself is gone: the status still says it
        pass
    return 2


if __name__ == "__main__":
    sys.exit(main())
