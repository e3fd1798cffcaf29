"""What the API answers, as plain data built from :class:`qkv.lens.Trace` objects (no web framework here).

Shape legend: ``N`` layers, ``H`` heads, ``L`` tokens. Every function raises ``ValueError`` with the same
wording as the ``qkv`` command for bad input (an unknown token, an out-of-range layer); the app turns those
into ``422 {"error": ...}``. The example runs on a synthetic trace.

Example:
    >>> import torch
    >>> from qkv.lens.trace import Trace
    >>> w = torch.tensor([[[[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.6, 0.3, 0.1]]]])   # (N=1, H=1, L=3, L=3)
    >>> doc = trace_payload(Trace.from_tensors("cat mat it", ["cat", "mat", "it"], weights=w), query="it")
    >>> doc["query"], [round(w, 3) for w in doc["weights"][0][0]], round(doc["breakdown"]["rows"][0]["weight"], 3)
    ({'index': 2, 'token': 'it'}, [0.6, 0.3, 0.1], 0.6)
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from ..lens.probe_io import Dataset, parse_items
from ..lens.probing import probe
from ..lens.summary import compare_summary, explanation, head_flips, preference_summary
from ..lens.trace import MEASURES, Trace
from ..view.html import masked_keys, token_labels

__all__ = [
    "trace_payload",
    "compare_payload",
    "probe_items",
    "probe_payload",
    "api_words",
    "QUERY_HINT",
    "PROBE_SOURCE",
]

PROBE_SOURCE = "request"  #: the probe result's ``source`` for inline items
QUERY_HINT = 'choose the query with the "query" field: a token ("it"), its n-th occurrence ("it@2") or an index'
#: The library's words for a field -> the API's (the lens speaks Python, the API speaks JSON fields).
API_WORDS = (
    (
        "give both prefer and over (e.g. prefer='cat', over='mat')",
        'give both "prefer" and "over" (e.g. "prefer": "cat", "over": "mat")',
    ),
    ("prefer and over name the same token", '"prefer" and "over" name the same token'),
    ("do not pass a head with measure='rollout'", 'do not send "head" with "measure": "rollout"'),
)


def api_words(message: str) -> str:
    """A library message in the API's words (:data:`API_WORDS`)."""
    for library, api in API_WORDS:
        message = message.replace(library, api)
    return message


def trace_payload(
    t: Trace,
    *,
    query: str | int | None = None,
    layer: int | None = None,
    head: int | None = None,
    measure: str = "weights",
    prefer: str | int | None = None,
    over: str | int | None = None,
    include_trace: bool = False,
    decimals: int = 4,
) -> dict:
    """The answer of ``POST /api/trace`` (see :class:`qkv.serve.schemas.TraceResponse`).

    The query, the pair, the head shown first, its breakdown, the summary and the caveat are
    :func:`qkv.lens.summary.explanation` (what ``qkv explain --json`` writes too; ``query=None`` picks the
    text's first pronoun, and on the essay's sentence the pair defaults to cat/mat). ``weights`` and ``values``
    are the query's rows ``(N, H, L)``, ``rollout`` ``(N, L)``, unrounded; ``trace`` (only with
    ``include_trace``) is ``Trace.to_dict(decimals)`` and ``masked`` ``L`` lists of keys no head may attend to
    (what the page needs to redraw every view without asking again).
    """
    if measure not in MEASURES:
        raise ValueError(f"measure must be one of {', '.join(MEASURES)}, got {measure!r}")
    try:
        told = explanation(t, query=query, prefer=prefer, over=over, layer=layer, head=head, measure=measure)
    except ValueError as e:
        hint = (
            f" ({QUERY_HINT})" if "is not in the text" in str(e) and not str(e).startswith(("prefer", "over")) else ""
        )
        raise ValueError(api_words(str(e)) + hint) from None
    i = told["query"]["index"]
    return {
        "schema": "qkv.serve.trace",
        "version": 1,
        "text": t.text,
        "model": dict(t.model),
        "tokens": t.token_records(),
        **told,
        "weights": t.weights[:, :, i].tolist(),
        "values": t.values[:, :, i].tolist(),
        "rollout": t.rollout[:, i].tolist(),
        "trace": t.to_dict(decimals) if include_trace else None,
        "masked": masked_keys(t) if include_trace else None,
        "labels": token_labels(t) if include_trace else None,
    }


def compare_payload(
    a: Trace, b: Trace, *, query: str | int, prefer: str | int, over: str | int, measure: str = "weights"
) -> dict:
    """The answer of ``POST /api/compare``: per head ``diff = measure(query->prefer) - measure(query->over)``
    in text A and in text B, heads that flip first (as ``qkv compare``)."""
    rankings, summaries, queries = [], [], []
    for label, t in (("A", a), ("B", b)):
        try:
            i, pa, po = t.resolve(query, prefer, over)
            rankings.append(t.heads(i, pa, po, measure))
        except ValueError as e:
            raise ValueError(f"text {label}: {api_words(str(e))}") from None
        queries.append(t.tokens[i])
        summaries.append(preference_summary(t, i, pa, po, measure))
    flips = head_flips(*rankings)
    ordered = [f for f in flips if f.flipped] + [f for f in flips if not f.flipped]
    pa, po = a.tokens[a.index(prefer)], a.tokens[a.index(over)]
    summary = compare_summary(flips, pa, po)
    return {
        "schema": "qkv.serve.compare",
        "version": 1,
        "texts": [a.text, b.text],
        "model": dict(a.model),
        "measure": measure,
        "query": queries[0],
        "prefer": pa,
        "over": po,
        "heads": [
            {
                "layer": f.layer,
                "head": f.head,
                "diff_a": f.diff_a,
                "diff_b": f.diff_b,
                "flipped": f.flipped,
                "clear": f.clear,
            }
            for f in ordered
        ],
        "summaries": summaries,
        "summary": summary,
    }


def probe_items(
    items: Sequence[Any], *, max_items: int = 64, check_text: Callable[[str, str], None] | None = None
) -> Dataset:
    """The items of ``POST /api/probe``, read and checked before the model runs.

    At most ``max_items``; each object in qkv's JSONL schema, read by :func:`qkv.lens.probe_io.parse_items`
    (its wording, an item named ``items[i]``); then ``check_text(text, "items[i].text")`` (the server's length
    limits) on every item's text. Raises ``ValueError`` for the first problem.
    """
    if len(items) > max_items:
        raise ValueError(
            f'"items" has {len(items)} items; this server probes at most {max_items} per request '
            f"(send fewer, or run qkv probe FILE on the command line for a whole dataset)"
        )
    data = parse_items(list(items), "items")
    if check_text is not None:
        for i, obj in enumerate(items):
            check_text(obj["text"], f"items[{i}].text")
    data.source = PROBE_SOURCE
    return data


def probe_payload(data: Dataset, model: Any, *, measure: str = "weights", seed: int = 0) -> dict:
    """The answer of ``POST /api/probe``: :func:`qkv.lens.probe` on ``data``, as ``ProbeResult.to_dict()``."""
    return probe(data, model, measure=measure, seed=seed).to_dict()
