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

from ..lens.heads import choose_head as lens_choose_head
from ..lens.probe_io import Dataset, parse_items
from ..lens.probing import probe
from ..lens.trace import Trace
from ..view.html import masked_keys, token_labels
from ..view.terminal import attention_summary, head_flips, preference_summary

__all__ = [
    "query_index",
    "choose_head",
    "trace_payload",
    "compare_payload",
    "probe_items",
    "probe_payload",
    "QUERY_HINT",
    "PROBE_SOURCE",
]

PROBE_SOURCE = "request"  #: the probe result's ``source`` for inline items
QUERY_HINT = 'choose the query with the "query" field: a token ("it"), its n-th occurrence ("it@2") or an index'


def query_index(t: Trace, query: str | int | None) -> int:
    """The query's position: None -> the first non-special token; a token string (first match) or an index."""
    if query is None:
        return next((j for j, s in enumerate(t.special) if not s), 0)
    try:
        return t.index(query)
    except ValueError as e:
        if isinstance(query, str) and query.strip().lstrip("-").isdigit():
            return t.index(int(query))
        raise ValueError(f"{e} ({QUERY_HINT})") from None


def _pair(t: Trace, prefer, over) -> tuple[int, int] | None:
    if (prefer is None) != (over is None):
        raise ValueError('give both "prefer" and "over" (e.g. "prefer": "cat", "over": "mat"), or neither')
    if prefer is None:
        return None
    idx = []
    for name, tok in (("prefer", prefer), ("over", over)):
        try:
            idx.append(t.index(tok))
        except ValueError as e:
            raise ValueError(f"{name}: {e}") from None
    if idx[0] == idx[1]:
        raise ValueError(f'"prefer" and "over" name the same token {prefer!r}; pick two different tokens')
    return idx[0], idx[1]


def choose_head(
    t: Trace, i: int, layer: int | None, head: int | None, measure: str = "weights", pair: tuple[int, int] | None = None
) -> tuple[int, int]:
    """The head shown first: the lens's one rule (:func:`qkv.lens.heads.choose_head`)."""
    p = pair or (None, None)
    return lens_choose_head(t, i, layer=layer, head=head, measure=measure, prefer=p[0], over=p[1])


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

    ``weights`` and ``values`` are the query's rows ``(N, H, L)``, ``rollout`` ``(N, L)``, unrounded;
    ``trace`` (only with ``include_trace``) is ``Trace.to_dict(decimals)`` and ``masked`` ``L`` lists of keys no
    head may attend to (what the page needs to redraw every view without asking again).
    """
    if measure not in ("weights", "values", "rollout"):
        raise ValueError(f"measure must be one of weights, values, rollout, got {measure!r}")
    i = query_index(t, query)
    pair = _pair(t, prefer, over)
    n, h = choose_head(t, i, layer, head, measure, pair)
    if pair:
        summary = preference_summary(t, i, pair[0], pair[1], measure)
    else:
        summary = attention_summary(t, i, measure)
    tokens = t.token_records()
    return {
        "schema": "qkv.serve.trace",
        "version": 1,
        "text": t.text,
        "model": dict(t.model),
        "tokens": tokens,
        "query": {"index": i, "token": t.tokens[i]},
        "layer": n,
        "head": h,
        "measure": measure,
        "prefer": None if pair is None else t.tokens[pair[0]],
        "over": None if pair is None else t.tokens[pair[1]],
        "weights": t.weights[:, :, i].tolist(),
        "values": t.values[:, :, i].tolist(),
        "rollout": t.rollout[:, i].tolist(),
        "breakdown": {"layer": n, "head": h, "rows": [r._asdict() for r in t.breakdown(i, n, h)]},
        "summary": summary,
        "trace": t.to_dict(decimals) if include_trace else None,
        "masked": masked_keys(t) if include_trace else None,
        "labels": token_labels(t) if include_trace else None,
    }


def compare_payload(
    a: Trace, b: Trace, *, query: str | int, prefer: str | int, over: str | int, measure: str = "weights"
) -> dict:
    """The answer of ``POST /api/compare``: per head ``diff = measure(query->prefer) - measure(query->over)``
    in text A and in text B, heads that flip first (as ``qkv compare``)."""
    rankings, summaries = [], []
    for label, t in (("A", a), ("B", b)):
        try:
            i = query_index(t, query)
            if t.index(prefer) == t.index(over):
                raise ValueError(f'"prefer" and "over" name the same token {prefer!r}; pick two different tokens')
            rankings.append(t.heads(i, prefer, over, measure))
        except ValueError as e:
            raise ValueError(f"text {label}: {e}") from None
        summaries.append(preference_summary(t, i, prefer, over, measure))
    flips = head_flips(*rankings)
    ordered = [f for f in flips if f.flipped] + [f for f in flips if not f.flipped]
    pa, po = a.tokens[a.index(prefer)], a.tokens[a.index(over)]
    to_b = [f for f in flips if f.flipped and f.diff_a > 0]
    to_a = [f for f in flips if f.flipped and f.diff_a < 0]
    n = len(flips)
    summary = (
        f"{len(to_b)} of {n} heads switch from '{pa}' to '{po}' and {len(to_a)} from '{po}' to '{pa}'; "
        f"the other {n - len(to_a) - len(to_b)} keep their preference."
    )
    return {
        "schema": "qkv.serve.compare",
        "version": 1,
        "texts": [a.text, b.text],
        "model": dict(a.model),
        "measure": measure,
        "query": a.tokens[query_index(a, query)],
        "prefer": pa,
        "over": po,
        "heads": [
            {"layer": f.layer, "head": f.head, "diff_a": f.diff_a, "diff_b": f.diff_b, "flipped": f.flipped}
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
