"""What ``POST /api/intervene`` answers, as plain data (no web framework here).

The request's interventions arrive as dicts (``{"kind": "ablate", "layer": 3, "head": 1}``, see
:mod:`qkv.serve.intervene_schemas`). :func:`resolve` checks each against the plain run of the text -- layer,
head and tokens in range, in the words of the ``qkv`` command, prefixed with ``interventions[i]`` -- and
:func:`intervene` traces the text with them (``qkv.trace(text, interventions=[ablate(...), ...])``) and
builds the answer: the query's weights in both runs, the metric on both runs and its effect, what was applied.

Shape legend: ``N`` layers, ``H`` heads, ``L`` tokens, ``E`` hidden size.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Callable, Sequence

import torch

from ..lens.adapters import Forward
from ..lens.effects import Metric, embedding_cosine, logit_diff, preference
from ..lens.heads import choose_head
from ..lens.interventions import KINDS, Intervention, Target, from_dict
from ..lens.loading import adapt
from ..lens.trace import Trace
from ..lens.tracing import trace
from ..view.html import masked_keys, token_labels

__all__ = ["resolve", "lens_interventions", "metrics", "intervene", "intervene_payload", "PlainRuns", "SCHEMA"]

SCHEMA = "qkv.serve.intervene"


def _where(layer: int | None, head: int | None) -> str:
    if layer is None:
        return "every layer" + ("" if head is None else f", head {head}")
    return f"L{layer} " + ("(every head)" if head is None else f"H{head}")


def _short(text: str, n: int = 40) -> str:
    return repr(text if len(text) <= n else text[: n - 1] + "…")


def _token(base: Trace, ref: str | int, what: str) -> int:
    try:
        return base.index(ref)
    except ValueError as e:
        raise ValueError(f"{what}: {e}") from None


def _check_place(base: Trace, spec: dict, where: str) -> tuple[int | None, int | None]:
    layer, head = spec.get("layer"), spec.get("head")
    try:
        layer = None if layer is None else base.check_layer(layer)
        head = None if head is None else base.check_head(head)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    kv = base.model.get("num_kv_heads") or base.num_heads
    if spec.get("step") in ("k", "v") and head is not None and head >= kv:
        raise ValueError(
            f"{where}: head {head} is out of range for step {spec['step']!r}; {base.model['name']} has {kv} "
            f"key/value heads (0..{kv - 1}), each shared by {base.num_heads // kv} query heads; pick one of those, "
            "or null for every head"
        )
    return layer, head


def resolve(base: Trace, specs: Sequence[dict], query: int) -> list[dict]:
    """Each spec checked against the plain run ``base``, tokens resolved: ``spec + {token_indices, label}``.

    Args:
        base: the plain trace of the text.
        specs: the request's interventions (dicts with ``kind`` and that kind's fields).
        query: the request's query index (a knockout without ``query`` cuts edges from it).

    Raises:
        ValueError: ``interventions[i] (kind): ...`` -- a layer, head or token out of range, a swap of a token
            with itself, a resample without ``source``.
    """
    applied = []
    for k, spec in enumerate(specs):
        kind = spec["kind"]
        where = f"interventions[{k}] ({kind})"
        layer, head = _check_place(base, spec, where)
        out = {**spec, "layer": layer, "head": head, "token_indices": []}
        if kind == "ablate":
            how = spec.get("how", "zero")
            if how == "resample" and not spec.get("source"):
                raise ValueError(
                    f'{where}: how "resample" takes the head\'s output from another run, but no "source" text '
                    'was given; add "source": "another sentence with as many tokens", or use how "zero"'
                )
            for field, owner in (("source", "resample"), ("references", "mean")):
                if spec.get(field) is not None and how != owner:
                    raise ValueError(
                        f'{where}: "{field}" is used only with how "{owner}", but how is "{how}"; '
                        f'drop "{field}" or send "how": "{owner}"'
                    )
            label = f"{spec.get('how', 'zero')}-ablate {_where(layer, head)}"
            if spec.get("how") == "resample":
                label += f" from {_short(spec['source'])}"
        elif kind == "knockout":
            q = query if spec.get("query") is None else _token(base, spec["query"], f"{where} query")
            keys = [_token(base, key, f"{where} keys[{j}]") for j, key in enumerate(spec["keys"])]
            out.update(query=q, keys=keys, token_indices=[q, *keys])
            cut = ", ".join(f"'{base.tokens[j]}'" for j in keys)
            label = f"knock out '{base.tokens[q]}' → {cut} in {_where(layer, head)}"
        elif kind == "swap":
            a, b = (_token(base, ref, f"{where} tokens[{j}]") for j, ref in enumerate(spec["tokens"]))
            if a == b:
                raise ValueError(
                    f"{where}: tokens {spec['tokens'][0]!r} and {spec['tokens'][1]!r} are both token {a} "
                    f"('{base.tokens[a]}'); swap two different tokens"
                )
            out.update(tokens=[a, b], token_indices=[a, b])
            label = f"swap {spec['step']} of '{base.tokens[a]}' and '{base.tokens[b]}' in {_where(layer, head)}"
        else:  # patch
            label = f"patch {spec.get('step', 'output')} of {_where(layer, head)} from {_short(spec['source'])}"
        out["label"] = label
        applied.append(out)
    return applied


def lens_interventions(applied: Sequence[dict], sources: dict[str, Trace] | None = None) -> list[Intervention]:
    """The :mod:`qkv.lens` interventions for resolved specs (through :func:`qkv.lens.interventions.from_dict`);
    ``sources`` maps a source text to its plain trace (a text not in it is traced by the library). The API's
    ``references`` is the library's ``over``."""
    sources = sources or {}
    made = []
    for spec in applied:
        d = {"over": spec.get("references"), **spec}
        if d.get("source") is not None:
            d["source"] = sources.get(d["source"], d["source"])
        fields = KINDS[spec["kind"]]
        args = {k: v for k, v in d.items() if k in fields and (v is not None or k in ("layer", "head"))}
        made.append(from_dict({"kind": spec["kind"], **args}))
    return made


def _forward(t: Trace) -> Forward:
    """A trace's outputs as the one-row :class:`Forward` the library's metrics read."""

    def row(x: torch.Tensor | None) -> torch.Tensor | None:
        return None if x is None else x[None]

    return Forward(t.final[None], row(t.logits), row(t.embedding))


def _final_cosine(target: Target, base: Forward, query: int):
    ref = base.final[0, query].float()
    return lambda fwd: torch.nn.functional.cosine_similarity(fwd.final[:, query].float(), ref[None], dim=-1)


def metrics(model: Any, base: Trace, t: Trace, query: int, pair: tuple[int, int] | None, method: str) -> list[dict]:
    """Every metric the model's output allows, on the plain run ``base`` and under the interventions (``t``).

    The library's metrics (:mod:`qkv.lens.effects`), evaluated on the two traces' outputs:

    * ``logit_diff`` (a model with a language-model head, with a pair): ``logits[query, id(prefer)] -
      logits[query, id(over)]``, the next token after the query being ``prefer`` rather than ``over``;
    * ``preference`` (with a pair): ``cos(final[query], final[prefer]) - cos(final[query], final[over])``;
    * ``embedding_cosine`` (a model that pools a sentence embedding): the embedding's cosine to the plain run's;
    * ``final_cosine`` (when none of those applies): ``cos(final[query], plain final[query])``.
    """
    target = Target.of(adapt(model), t.text)
    q = t.tokens[query]
    chosen: list[tuple[str, Metric | None, str]] = []
    if pair is not None:
        a, o = pair
        pa, po = t.tokens[a], t.tokens[o]
        if base.logits is not None:
            m = logit_diff(target.ids[a], target.ids[o], position=query)
            chosen.append(("logit_diff", m, f"logits['{q}' → '{pa}'] - logits['{q}' → '{po}']"))
        chosen.append(
            (
                "preference",
                preference(query, a, o),
                f"cos(final['{q}'], final['{pa}']) - cos(final['{q}'], final['{po}'])",
            )
        )
    if base.embedding is not None:
        chosen.append(("embedding_cosine", embedding_cosine(), "cos(sentence embedding, the plain run's)"))
    if not chosen:
        chosen.append(("final_cosine", None, f"cos(final['{q}'], the plain run's)"))
    plain, under = _forward(base), _forward(t)
    out = []
    for name, metric, description in chosen:
        fn = _final_cosine(target, plain, query) if metric is None else metric.bind(target, plain)
        b, v = float(fn(plain)[0]), float(fn(under)[0])
        out.append({"name": name, "description": description, "method": method, "base": b, "value": v, "effect": v - b})
    return out


def _summary(t: Trace, metric: dict, method: str, change: torch.Tensor) -> str:
    n, h = divmod(int(change.argmax()), t.num_heads)
    moved = (
        f"the query's weights change most in L{n} H{h} (total variation {float(change[n, h]):.3f})"
        if float(change.max()) > 1e-6
        else "no head's weights for the query change"
    )
    if method == "none":
        return f"No intervention: {metric['name']} = {metric['value']:+.4f} (the plain run)."
    return (
        f"Under {method}: {metric['name']} moves from {metric['base']:+.4f} to {metric['value']:+.4f} "
        f"(effect {metric['effect']:+.4f}); {moved}."
    )


def intervene_payload(
    model: Any,
    base: Trace,
    t: Trace,
    applied: Sequence[dict],
    *,
    query: int,
    pair: tuple[int, int] | None = None,
    layer: int | None = None,
    head: int | None = None,
    include_trace: bool = False,
    decimals: int = 4,
) -> dict:
    """The answer of ``POST /api/intervene`` (see :class:`qkv.serve.intervene_schemas.InterveneResponse`)."""
    method = "; ".join(s["label"] for s in applied) or "none"
    found = metrics(model, base, t, query, pair, method)
    if layer is None or head is None:
        first = next((s for s in applied if s["layer"] is not None and s.get("head") is not None), None)
        if first is not None and layer is None and head is None:
            layer, head = first["layer"], first["head"]
        else:
            p = pair or (None, None)
            layer, head = choose_head(t, query, layer=layer, head=head, prefer=p[0], over=p[1])
    w, w0 = t.weights[:, :, query], base.weights[:, :, query]  # (N, H, L)
    change = 0.5 * (w.double() - w0.double()).abs().sum(-1)  # (N, H)
    return {
        "schema": SCHEMA,
        "version": 1,
        "text": t.text,
        "model": dict(t.model),
        "tokens": t.token_records(),
        "query": {"index": query, "token": t.tokens[query]},
        "layer": t.check_layer(layer),
        "head": t.check_head(head),
        "prefer": None if pair is None else t.tokens[pair[0]],
        "over": None if pair is None else t.tokens[pair[1]],
        "interventions": [dict(s) for s in applied],
        "metric": found[0],
        "metrics": found,
        "weights": w.tolist(),
        "base_weights": w0.tolist(),
        "weight_change": change.tolist(),
        "summary": _summary(t, found[0], method, change),
        "trace": t.to_dict(decimals) if include_trace else None,
        "masked": masked_keys(t) if include_trace else None,
        "labels": token_labels(t) if include_trace else None,
    }


def _query_and_pair(base: Trace, query, prefer, over) -> tuple[int, tuple[int, int] | None]:
    i = next((j for j, s in enumerate(base.special) if not s), 0) if query is None else _token(base, query, "query")
    if (prefer is None) != (over is None):
        raise ValueError('give both "prefer" and "over" (e.g. "prefer": "cat", "over": "mat"), or neither')
    if prefer is None:
        return i, None
    a, b = _token(base, prefer, "prefer"), _token(base, over, "over")
    if a == b:
        raise ValueError(f'"prefer" and "over" name the same token {prefer!r}; pick two different tokens')
    return i, (a, b)


class PlainRuns:
    """The plain traces of the last ``size`` texts (the page asks about one text again and again, one change at a
    time, so its plain run is traced once). Thread-safe; a trace is never changed after it is made.

    Args:
        model: what ``tracer`` runs.
        tracer: ``tracer(text, model) -> Trace`` (the app's).
        size: texts kept (a 64-token MiniLM trace holds about 6 MB).
    """

    def __init__(self, model: Any, tracer: Callable[[str, Any], Trace] = trace, size: int = 4):
        self.model, self.tracer, self.size = model, tracer, size
        self._runs: OrderedDict[str, Trace] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, text: str) -> Trace:
        with self._lock:
            if text in self._runs:
                self._runs.move_to_end(text)
                return self._runs[text]
        t = self.tracer(text, self.model)
        with self._lock:
            self._runs[text] = t
            while len(self._runs) > self.size:
                self._runs.popitem(last=False)
        return t


def intervene(
    model: Any,
    text: str,
    specs: Sequence[dict],
    *,
    plain: Callable[[str], Trace] | None = None,
    query: str | int | None = None,
    prefer: str | int | None = None,
    over: str | int | None = None,
    layer: int | None = None,
    head: int | None = None,
    include_trace: bool = False,
) -> dict:
    """Trace ``text`` plainly and under ``specs``; the answer of ``POST /api/intervene``.

    ``plain(text) -> Trace`` gives the plain runs of the text and of source texts (``patch``, ``ablate`` with
    ``how="resample"``, which must have the text's token count); default: :func:`qkv.lens.tracing.trace` on
    ``model`` (the app passes its :class:`PlainRuns`). The intervened run is ``qkv.trace(text, model,
    interventions=...)``.
    """
    plain = plain or (lambda x: trace(x, model))
    base = plain(text)
    i, pair = _query_and_pair(base, query, prefer, over)
    applied = resolve(base, specs, i)
    sources: dict[str, Trace] = {}
    for k, spec in enumerate(applied):
        if spec.get("source") and spec["source"] not in sources:
            sources[spec["source"]] = plain(spec["source"])
        src = sources.get(spec.get("source"))
        if src is not None and len(src) != len(base):
            raise ValueError(
                f"interventions[{k}] ({spec['kind']}): the source text is {len(src)} tokens long but the text is "
                f"{len(base)}; expected the same token count (token i takes the source's token i): pick a source "
                f"that differs in one word, e.g. the text with one word changed"
            )
    t = trace(text, model, interventions=lens_interventions(applied, sources)) if applied else base
    return intervene_payload(
        model, base, t, applied, query=i, pair=pair, layer=layer, head=head, include_trace=include_trace
    )
