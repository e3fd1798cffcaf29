"""The subcommands that trace one text (or a minimal pair): ``qkv explain``, ``qkv heads`` and ``qkv compare``.

Each is an argument parser and a runner (``COMMANDS`` entries in :mod:`qkv.cli`, whose docstring has their
``--json`` schema, ``"schema": "qkv.cli"``). What they say comes from the lens: the query and pair by
:meth:`qkv.lens.trace.Trace.resolve` (the same rule as ``--html`` and ``qkv serve``), the head shown first by
:func:`qkv.lens.heads.choose_head`, the sentences and the explain payload from :mod:`qkv.lens.summary`.
"""

from __future__ import annotations

import argparse
import sys

from . import _support as s

__all__ = [
    "explain_args",
    "run_explain",
    "heads_args",
    "run_heads",
    "compare_args",
    "run_compare",
    "EXPLAIN",
    "HEADS",
    "COMPARE",
    "CLI_SCHEMA_VERSION",
]

CLI_SCHEMA_VERSION = 1
_QUERY_HELP = (
    "the token whose attention is shown: a token ('it', any case), the n-th one ('it@2') or an index "
    "(default: the text's first pronoun -- it, she, they, ... -- else its first token)"
)
_MEASURE_HELP = {
    "weights": "weights: softmax(q·k/√d)",
    "values": "values: ‖α·f(v)‖ (what arrives)",
    "rollout": "rollout: through the layers (all heads)",
}


# ------------------------------------------------------------------------------------------- shared
def _trace(text: str, args, html: bool = False):
    """Trace ``text`` with a spinner on stderr while the model loads and runs.

    With ``html``, the page's size limit is checked on the token count before anything is traced or printed.
    When most of the text is unknown to the model's vocabulary (Chinese text through the English MiniLM),
    a note on stderr says so and how to pick another model.
    """
    from ..lens.essay import ESSAY_SENTENCE
    from ..lens.loading import count_tokens, model_info
    from ..lens.tracing import trace

    if not text.strip():
        raise ValueError(f'the text is empty; give a sentence, e.g. qkv explain "{ESSAY_SENTENCE}"')
    with s.console(stderr=True).status(f"Loading {s.show(args.model)} and recording attention ..."):
        m = s.load(args)
        if html:
            from ..view.html import check_size

            n = count_tokens(m, text)
            if n is not None:
                info = model_info(m, args.model)
                check_size(info["num_layers"], info["num_heads"], n)
        t = trace(text, m, truncate=args.truncate)
    if t.mostly_unknown:
        print(f"qkv: note: {s.cli_words(t.vocabulary_note())}", file=sys.stderr)
    return t


def _query_error(t, e: ValueError) -> ValueError:
    """A query that is not in the text, in the command's words (the note above, or the flag to use)."""
    text = str(e)
    if text.startswith(("prefer: ", "over: ")) or "not in the text" not in text:
        return e
    if t.mostly_unknown:
        token = text.split(" is not in the text", 1)[0].removeprefix("token ")
        return ValueError(
            f"token {token} is not among the tokens the model read ({' '.join(t.tokens)}); see the note above"
        )
    if t.unknown:
        return e
    return ValueError(f"{text} (choose the query with --query)")


def _resolve(t, args, prefer=None, over=None):
    """:meth:`Trace.resolve` of ``--query`` (and a pair), with query errors in the command's words."""
    try:
        return t.resolve(args.query, prefer, over)
    except ValueError as e:
        raise _query_error(t, e) from None


def _doc(command: str, t, **fields) -> dict:
    return {"schema": "qkv.cli", "version": CLI_SCHEMA_VERSION, "command": command, "model": t.model["name"], **fields}


def _common(p: argparse.ArgumentParser, measures=None) -> None:
    from ..lens.trace import MEASURES

    measures = measures or MEASURES
    p.add_argument("--model", default="minilm", help="model name or checkpoint directory (default: minilm)")
    p.add_argument("--query", help=_QUERY_HELP)
    p.add_argument(
        "--measure",
        default="weights",
        choices=measures,
        help="; ".join(_MEASURE_HELP[m] for m in measures) + " (default: weights)",
    )
    p.add_argument("--json", metavar="PATH", help="also write the result as JSON")
    p.add_argument("--truncate", action="store_true", help="keep the first tokens of a text too long for the model")


def _positive(args, flag: str = "top") -> None:
    if getattr(args, flag) < 1:
        raise ValueError(f"--{flag} must be at least 1, got {getattr(args, flag)}")


# ------------------------------------------------------------------------------------------- explain
def explain_args(p: argparse.ArgumentParser) -> None:
    from ..lens.essay import ESSAY_SENTENCE

    p.add_argument("text", nargs="?", default=ESSAY_SENTENCE, help=f"the text (default: {ESSAY_SENTENCE!r})")
    _common(p)
    p.add_argument("--layer", type=int, help="layer of the breakdown (default: the best head's layer)")
    p.add_argument("--head", type=int, help="head shown per layer and in the breakdown (default: the best)")
    p.add_argument("--top", type=int, default=5, metavar="K", help="tokens shown per layer (default 5)")
    p.add_argument(
        "--prefer",
        help="a token the query may prefer (with --over); default on the default sentence with the query on 'it': cat",
    )
    p.add_argument("--over", help="the token it is compared with (default on the default sentence: mat)")
    p.add_argument("--html", metavar="PATH", help="write one self-contained HTML page")
    p.add_argument("--png", metavar="PATH", help="write a heatmap of the breakdown head")


def run_explain(args, console) -> int:
    from ..lens.heads import choose_head
    from ..lens.summary import explanation
    from ..view.terminal import breakdown_table, top_table

    _positive(args)
    s.check_outputs(args)
    t = _trace(args.text, args, html=bool(args.html))
    i, prefer, over = _resolve(t, args, args.prefer, args.over)
    told = explanation(t, query=i, prefer=prefer, over=over, layer=args.layer, head=args.head, measure=args.measure)
    layer, head, summary, caveat = told["layer"], told["head"], told["summary"], told["caveat"]

    console.print(top_table(t, i, measure=args.measure, k=args.top, head=args.head, prefer=prefer, over=over))
    console.print()
    console.print(breakdown_table(t, i, layer, head))
    console.print()
    console.print(summary, style="bold", markup=False, highlight=False)
    if caveat:
        console.print(caveat, style="dim", markup=False, highlight=False)

    if args.html:
        from ..view.html import write_html

        with s.writing("html", args.html):
            write_html(t, args.html, query=i, layer=layer, head=head, measure=args.measure, summary=summary)
        console.print(
            f"wrote {s.show(args.html)} (open it in a browser; it needs no network)",
            style="dim",
            markup=False,
            highlight=False,
        )
    if args.png:
        from ..view.png import save_heatmap

        with s.writing("png", args.png):
            save_heatmap(t, args.png, layer, head, args.measure, query=i)
        console.print(f"wrote {s.show(args.png)}", style="dim", markup=False, highlight=False)
    if args.json:
        layers = []
        for n in range(t.num_layers):
            h = (
                None
                if args.measure == "rollout"
                else choose_head(t, i, layer=n, head=args.head, measure=args.measure, prefer=prefer, over=over)[1]
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
            query=told["query"],
            prefer=told["prefer"],
            over=told["over"],
            layers=layers,
            breakdown=told["breakdown"],
            summary=summary,
            caveat=caveat,
            trace=t.to_dict(),
        )
        s.write_json(args.json, doc, console)
    return 0


# ------------------------------------------------------------------------------------------- heads
def heads_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("text", help="the text")
    _common(p, measures=("weights", "values"))
    p.add_argument("--prefer", required=True, help="the token the query may prefer (e.g. cat)")
    p.add_argument("--over", required=True, help="the token it is compared with (e.g. mat)")
    p.add_argument("--top", type=int, default=10, metavar="K", help="heads shown at each end (default 10)")


def run_heads(args, console) -> int:
    from ..lens.summary import preference_summary
    from ..view.terminal import heads_table

    _positive(args)
    s.check_outputs(args)
    t = _trace(args.text, args)
    i, ia, ib = _resolve(t, args, args.prefer, args.over)
    prefs = t.heads(i, ia, ib, args.measure)
    a, b = t.tokens[ia], t.tokens[ib]
    console.print(heads_table(t, prefs, a, b, limit=args.top))
    summary = preference_summary(t, i, ia, ib, args.measure)
    console.print(summary, style="bold", markup=False, highlight=False)
    if args.json:
        doc = _doc(
            "heads",
            t,
            text=t.text,
            measure=args.measure,
            query=t.tokens[i],
            prefer=a,
            over=b,
            heads=[p._asdict() for p in prefs],
            summary=summary,
        )
        s.write_json(args.json, doc, console)
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

    from ..lens.summary import compare_summary, head_flips, preference_summary
    from ..view.terminal import compare_table

    _positive(args)
    s.check_outputs(args)
    traces, rankings, summaries, queries = [], [], [], []
    for label, text in (("A", args.text_a), ("B", args.text_b)):
        if not text.strip():
            raise ValueError(f"text {label} is empty; give two sentences that differ in one word")
        t = _trace(text, args)
        try:
            i, ia, ib = _resolve(t, args, args.prefer, args.over)
            rankings.append(t.heads(i, ia, ib, args.measure))
        except ValueError as e:
            raise ValueError(f"text {label}: {s.cli_words(str(e))}") from None
        traces.append(t)
        queries.append(t.tokens[i])
        summaries.append(preference_summary(t, i, ia, ib, args.measure))
    flips = head_flips(*rankings)
    a, b = traces[0].tokens[traces[0].index(args.prefer)], traces[0].tokens[traces[0].index(args.over)]
    for label, t, line in zip("AB", traces, summaries):
        console.print(Text(f"{label}: {t.text}", style="bold"))
        console.print(Text(f"   {line}"))
    console.print()
    console.print(compare_table(flips, a, b, limit=args.top))
    summary = compare_summary(flips, a, b)
    console.print(summary, style="bold", markup=False, highlight=False)
    if args.json:
        doc = _doc(
            "compare",
            traces[0],
            texts=[args.text_a, args.text_b],
            measure=args.measure,
            query=queries[0],
            prefer=a,
            over=b,
            heads=[{**f._asdict(), "flipped": f.flipped, "clear": f.clear} for f in flips],
            summaries=summaries,
            summary=summary,
        )
        s.write_json(args.json, doc, console)
    return 0


EXPLAIN = s.Command(
    "show what a token attends to, layer by layer, and the step-by-step chain of one head", explain_args, run_explain
)
HEADS = s.Command("rank heads by how much a token prefers one token over another", heads_args, run_heads)
COMPARE = s.Command("minimal pairs: which heads change preference when one word changes", compare_args, run_compare)
