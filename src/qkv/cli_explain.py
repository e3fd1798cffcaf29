"""The subcommands that trace one text (or a minimal pair): ``qkv explain``, ``qkv heads`` and ``qkv compare``.

Each is an argument parser and a runner, one entry of :data:`qkv.cli.COMMANDS` (their ``--json`` schema,
``"schema": "qkv.cli"``, is in :mod:`qkv.cli`); the CLI's shared helpers (loading ``--model``, checking and
writing outputs) are imported from :mod:`qkv.cli` when a command runs.
"""

from __future__ import annotations

import argparse
import sys

from .cli_errors import cli_words, show, writing
from .lens.trace import MEASURES

__all__ = [
    "explain_args",
    "run_explain",
    "heads_args",
    "run_heads",
    "compare_args",
    "run_compare",
    "DEFAULT_TEXT",
    "DEFAULT_QUERY",
    "CLI_SCHEMA_VERSION",
]

DEFAULT_TEXT = "The cat sat on the mat because it was tired."
DEFAULT_QUERY = "it"
CLI_SCHEMA_VERSION = 1


# ------------------------------------------------------------------------------------------- shared
def _trace(text: str, args):
    """Trace ``text`` with a spinner on stderr while the model loads and runs.

    When most of the text is unknown to the model's vocabulary (Chinese text through the English MiniLM),
    a note on stderr says so and how to pick another model.
    """
    from .cli import _console, _load
    from .lens.trace import trace

    if not text.strip():
        raise ValueError(f'the text is empty; give a sentence, e.g. qkv explain "{DEFAULT_TEXT}"')
    with _console(stderr=True).status(f"Loading {show(args.model)} and recording attention ..."):
        t = trace(text, _load(args), truncate=args.truncate)
    if t.mostly_unknown:
        print(f"qkv: note: {cli_words(t.vocabulary_note())}", file=sys.stderr)
    return t


def _doc(command: str, t, **fields) -> dict:
    return {"schema": "qkv.cli", "version": CLI_SCHEMA_VERSION, "command": command, "model": t.model["name"], **fields}


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
def explain_args(p: argparse.ArgumentParser) -> None:
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


def run_explain(args, console) -> int:
    from .cli import _check_outputs, _write_json
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
        if prefer is not None and over is not None  # both or neither (_pair)
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
def heads_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("text", help="the text")
    _common(p, measures=("weights", "values"))
    p.add_argument("--prefer", required=True, help="the token the query may prefer (e.g. cat)")
    p.add_argument("--over", required=True, help="the token it is compared with (e.g. mat)")
    p.add_argument("--top", type=int, default=10, metavar="K", help="heads shown at each end (default 10)")


def run_heads(args, console) -> int:
    from .cli import _check_outputs, _write_json
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
def compare_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("text_a", help="the first text, e.g. '... because it was tired.'")
    p.add_argument("text_b", help="the same text with one word changed, e.g. '... because it was soft.'")
    _common(p, measures=("weights", "values"))
    p.add_argument("--prefer", required=True, help="a token in both texts (e.g. cat)")
    p.add_argument("--over", required=True, help="another token in both texts (e.g. mat)")
    p.add_argument("--top", type=int, default=12, metavar="K", help="heads listed (default 12)")


def run_compare(args, console) -> int:
    from rich.text import Text

    from .cli import _check_outputs, _write_json
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
