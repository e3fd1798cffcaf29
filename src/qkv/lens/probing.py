"""``qkv.lens.probing`` (``qkv.lens.probe``): does a head track the referent? Head-level evidence over a dataset.

For every item (a text, a query span -- the pronoun --, ``C >= 2`` candidate spans, the right one) and
every layer x head, the probe reads how much the query takes from each candidate and lets each head
"pick" the candidate it attends to most. :func:`analyse` then gives per-head accuracy with exact
intervals, baselines on the same items, a held-out best-head figure, a permutation null and a twin
analysis (see :mod:`qkv.lens.stats`), and a verdict.

Token choice, by character span (never by first string match):

* the query is every token overlapping its span (rows averaged when the pronoun is split);
* a candidate is its **head word** (:func:`head_word`), and its score is the sum over that word's
  pieces (``pieces="first"``: the first piece only).

``qkv.lens.probe(items, model)`` is :func:`probe` (re-exported by :mod:`qkv.lens`).

Shape legend: ``N`` layers, ``H`` heads (``1`` for rollout), ``M`` used items, ``C`` candidates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from . import stats
from .loading import load_model, model_name
from .probe_io import Dataset, Item, Skipped, Span, head_word, load_twins, read_items
from .trace import MEASURES, Trace
from .tracing import trace_batch

__all__ = [
    "probe",
    "analyse",
    "head_word",
    "map_item",
    "item_scores",
    "ProbeResult",
    "PROBE_SCHEMA",
    "MEASURES",
    "PIECES",
    "TRACKS",
    "ABOVE_CHANCE",
    "NO_EVIDENCE",
    "Dataset",
    "Item",
    "Skipped",
    "Span",
    "read_items",
    "load_twins",
]

PROBE_SCHEMA = "qkv.probe"
PIECES = ("sum", "first")
TRACKS, ABOVE_CHANCE, NO_EVIDENCE = "tracks the referent", "does not clear the baselines", "no better than chance"


@dataclass(frozen=True)
class Mapped:
    """An item's tokens: ``query`` token indices, per candidate the head-word token indices.

    ``head_words`` are the candidates' head *words* (:func:`head_word`), not attention heads; the old name
    ``heads`` is kept as a read-only alias (deprecated).
    """

    item: Item
    query: list[int]
    candidates: list[list[int]]
    head_words: list[Span]

    @property
    def heads(self) -> list[Span]:
        """Deprecated alias of :attr:`head_words`."""
        return self.head_words


def map_item(item: Item, t: Trace, pieces: str = "sum") -> Mapped | Skipped:
    """Tokens of the query and of each candidate's head word in ``t`` (the item's trace), or why not."""
    heads = [head_word(c) for c in item.candidates]
    names = [h.text.lower() for h in heads]
    for a in range(len(heads)):
        for b in range(a + 1, len(heads)):
            if names[a] == names[b]:
                return Skipped(
                    item.id,
                    item.line,
                    f"candidates {item.candidates[a].text!r} and "
                    f"{item.candidates[b].text!r} share the head word {heads[a].text!r}",
                )
    for c in item.candidates:
        if c.start < item.query.end and item.query.start < c.end:
            return Skipped(item.id, item.line, f"candidate {c.text!r} overlaps the query {item.query.text!r}")
    q = t.span(item.query.start, item.query.end)
    if not q:
        return Skipped(
            item.id, item.line, f"the query {item.query.text!r} has no token (text cut at the model's {len(t)} tokens?)"
        )
    cands = []
    for c, h in zip(item.candidates, heads):
        toks = t.span(h.start, h.end)
        if not toks:
            return Skipped(
                item.id, item.line, f"candidate {c.text!r} has no token (text cut at the model's {len(t)} tokens?)"
            )
        cands.append(toks[:1] if pieces == "first" else toks)
    return Mapped(item, q, cands, heads)


def item_scores(t: Trace, m: Mapped, measure: str = "weights") -> np.ndarray:
    """``(N, H, C)`` how much the query takes from each candidate (``H = 1`` for rollout)."""
    if measure == "rollout":
        full = t.rollout.unsqueeze(1)  # (N, 1, L, L)
    elif measure == "values":
        full = t.values
    else:
        full = t.weights
    rows = full[:, :, m.query, :].mean(2)  # (N, H, L)
    return torch.stack([rows[:, :, c].sum(-1) for c in m.candidates], -1).double().numpy()


@dataclass
class ProbeResult:
    """Everything :func:`analyse` found; :meth:`to_dict` is the documented JSON schema (``schema: qkv.probe``)."""

    model: str
    measure: str
    pieces: str
    source: str
    total: int
    used: list[str]
    skipped: list[Skipped]
    shape: tuple[int, int]
    heads: list[stats.Accuracy]
    baselines: dict[str, dict]
    heldout: stats.HeldOut | None
    mean_over_heads: float
    null_p: float
    null_best: float
    null_rounds: int
    twins: stats.TwinStats
    verdict: str
    reason: str

    def head(self, k: int) -> tuple[int, int]:
        """(layer, head) of flat head index ``k``."""
        return divmod(int(k), self.shape[1])

    def ranked(self) -> list[tuple[int, int, stats.Accuracy]]:
        """``(layer, head, accuracy)`` best first (ties: lower layer, then head)."""
        order = sorted(range(len(self.heads)), key=lambda k: (-self.heads[k].correct, k))
        return [(*self.head(k), self.heads[k]) for k in order]

    def grid(self) -> np.ndarray:
        """``(N, H)`` per-head accuracy."""
        return np.array([a.accuracy for a in self.heads]).reshape(self.shape)

    def to_dict(self) -> dict:
        """The result as JSON data.

        Schema (``"schema": "qkv.probe"``, ``"version": 1``)::

            {"schema", "version", "model", "measure", "pieces", "source",
             "items": {"total": int, "used": int, "skipped": [{"id", "line", "reason"}]},
             "layers": N, "heads_per_layer": H,
             "heads": [{"layer", "head", "correct", "n", "accuracy", "ci_low", "ci_high"}],   # best first, N*H
             "baselines": {"first"|"nearest"|"random": {"accuracy", "ci_low", "ci_high", "correct", "n"}},
             "heldout": {"accuracy", "ci_low", "ci_high", "correct", "n", "seed",    # the median split
                         "splits": {"n", "min", "median", "max"},                # accuracy over all splits
                         "heads_chosen": [{"layer", "head", "train_accuracy"}]} | null,
             "mean_over_heads": float,                      # mean of the per-head accuracies
             "null": {"best_of_heads": float, "best_of_heads_p": float, "rounds": int},
             "twins": {"pairs", "heads", "mean_flips", "flips_right", "flips_wrong", "toward_right",
                       "toward_wrong", "sign_test_p"},
             "verdict": str, "reason": str}

        ``random`` is the expected accuracy of a uniform pick (``correct`` = expected count, rounded).
        """
        ho = None
        if self.heldout is not None:
            sp = sorted(self.heldout.splits)
            ho = {
                **self.heldout.score.to_dict(),
                "seed": self.heldout.seed,
                "splits": {"n": len(sp), "min": sp[0], "median": sp[(len(sp) - 1) // 2], "max": sp[-1]},
                "heads_chosen": [
                    {"layer": self.head(k)[0], "head": self.head(k)[1], "train_accuracy": acc}
                    for k, acc in self.heldout.chosen
                ],
            }
        return {
            "schema": PROBE_SCHEMA,
            "version": 1,
            "model": self.model,
            "measure": self.measure,
            "pieces": self.pieces,
            "source": self.source,
            "items": {"total": self.total, "used": len(self.used), "skipped": [s.to_dict() for s in self.skipped]},
            "layers": self.shape[0],
            "heads_per_layer": self.shape[1],
            "heads": [{"layer": n, "head": h, **a.to_dict()} for n, h, a in self.ranked()],
            "baselines": self.baselines,
            "heldout": ho,
            "mean_over_heads": self.mean_over_heads,
            "null": {"best_of_heads": self.null_best, "best_of_heads_p": self.null_p, "rounds": self.null_rounds},
            "twins": self.twins.to_dict(),
            "verdict": self.verdict,
            "reason": self.reason,
        }


def _distance(c: Span, q: Span) -> int:
    return q.start - c.end if c.end <= q.start else max(c.start - q.end, 0)


def _twins(items: Sequence[Item]) -> list[tuple[int, int]]:
    """Index pairs of twins: exactly two items share a pair id, with the same candidate words, different answers."""
    by: dict[str, list[int]] = {}
    for i, it in enumerate(items):
        if it.pair is not None:
            by.setdefault(it.pair, []).append(i)
    out = []
    for idx in by.values():
        if len(idx) == 2:
            a, b = (items[i] for i in idx)
            words = [[head_word(x).text.lower() for x in it.candidates] for it in (a, b)]
            same = words[0] == words[1]
            if same and a.answer != b.answer:
                out.append((idx[0], idx[1]))
    return out


def _verdict(ho: stats.HeldOut | None, base: dict[str, dict]) -> tuple[str, str]:
    named = ", ".join(f"{k} {v['accuracy']:.0%}" for k, v in base.items())
    if ho is None:
        return NO_EVIDENCE, "too few pairs of items for held-out selection (need at least 2 groups)"
    s = ho.score
    fig = (
        f"held-out best head {s.accuracy:.0%} [{s.ci_low:.0%}, {s.ci_high:.0%}] ({s.correct}/{s.n}, median of "
        f"{len(ho.splits)} splits: {min(ho.splits):.0%}..{max(ho.splits):.0%})"
    )
    uncleared = [k for k, v in base.items() if s.ci_low <= v["accuracy"]]
    if not uncleared:
        return TRACKS, f"{fig}: the interval clears every baseline ({named})"
    if s.ci_low > base["random"]["accuracy"]:
        return ABOVE_CHANCE, f"{fig}: above chance but not clear of the {' and '.join(uncleared)} baseline ({named})"
    return NO_EVIDENCE, f"{fig}: the interval does not clear chance ({named})"


def analyse(
    scores: np.ndarray,
    items: Sequence[Item],
    *,
    skipped: Sequence[Skipped] = (),
    total: int | None = None,
    model: str = "model",
    measure: str = "weights",
    pieces: str = "sum",
    source: str = "",
    rounds: int = 1000,
    seed: int = 0,
    splits: int = 21,
) -> ProbeResult:
    """Statistics from per-item scores.

    Args:
        scores: ``M`` arrays ``(N, H, C_m)`` (or one ``(M, N, H, C)`` array): the query's attention to each
            candidate, per head; the head picks the largest.
        items: the ``M`` items (answers, spans for the baselines, pair ids for held-out and twins).
        skipped, total: items not used (reported) and the number read.
        rounds, seed: permutation-null draws and the seed of the null and of the held-out splits.
        splits: held-out splits tried (seeds ``seed..seed+splits-1``); the median split is reported.
    """
    items = list(items)
    if len(items) == 0:
        why = "; ".join(f"{s.id}: {s.reason}" for s in list(skipped)[:3])
        raise ValueError(
            "no usable items: every item was skipped or the file is empty"
            + (f" ({why}{'; ...' if len(skipped) > 3 else ''})" if why else "")
        )
    if len(scores) != len(items):
        raise ValueError(f"got scores for {len(scores)} items but {len(items)} items")
    N, H = np.asarray(scores[0]).shape[:2]
    preds = np.stack([np.asarray(s).reshape(N * H, -1).argmax(-1) for s in scores], 1)  # (K, M)
    answers = np.array([it.answer for it in items])
    correct = preds == answers[None, :]
    M = len(items)
    heads = [stats.accuracy(int(c), M) for c in correct.sum(1)]
    first = sum(min(range(len(it.candidates)), key=lambda c: it.candidates[c].start) == it.answer for it in items)
    near = sum(
        min(range(len(it.candidates)), key=lambda c: (_distance(it.candidates[c], it.query), -c)) == it.answer
        for it in items
    )
    expected = float(sum(1.0 / len(it.candidates) for it in items))
    rand = stats.accuracy(round(expected), M)._replace(accuracy=expected / M)
    base = {
        "first": stats.accuracy(int(first), M).to_dict(),
        "nearest": stats.accuracy(int(near), M).to_dict(),
        "random": rand.to_dict(),
    }
    groups = [it.pair if it.pair is not None else f"item:{i}" for i, it in enumerate(items)]
    ho = stats.heldout_median(correct, groups, seed, splits) if len(set(groups)) >= 2 else None
    twins = _twins(items)
    best, p, _ = stats.permutation_null(preds, answers, [len(it.candidates) for it in items], twins, rounds, seed)
    verdict, reason = _verdict(ho, base)
    return ProbeResult(
        model,
        measure,
        pieces,
        source,
        len(items) + len(skipped) if total is None else total,
        [it.id for it in items],
        list(skipped),
        (N, H),
        heads,
        base,
        ho,
        float(np.mean([a.accuracy for a in heads])),
        p,
        best,
        rounds,
        stats.twin_flips(preds, answers, twins),
        verdict,
        reason,
    )


def probe(
    items: Dataset | Sequence[Item] | str,
    model: Any = "minilm",
    *,
    measure: str = "weights",
    pieces: str = "sum",
    batch_size: int = 32,
    rounds: int = 1000,
    seed: int = 0,
    splits: int = 21,
    progress=None,
) -> ProbeResult:
    """Run the probe: trace every item in padded batches, map spans to tokens, score each head, analyse.

    Args:
        items: a :class:`Dataset`, a list of :class:`Item`, a path (``.jsonl`` or WSC ``.xml``) or ``"twins"``
            (the shipped CC0 twin pairs).
        model: a model name/path or a loaded model (any model qkv can trace).
        measure: ``weights`` (softmax weights), ``values`` (value-norm shares) or ``rollout`` (per layer, no heads).
        pieces: ``sum`` a candidate's word pieces, or take the ``first`` piece.
        batch_size: texts per forward pass.
        rounds, seed, splits: see :func:`analyse`.
        progress: called with ``(done, total)`` after each batch.
    """
    if measure not in MEASURES:
        raise ValueError(f"measure must be one of {', '.join(MEASURES)}, got {measure!r}")
    if pieces not in PIECES:
        raise ValueError(f"pieces must be one of {', '.join(PIECES)}, got {pieces!r}")
    if isinstance(items, str):
        items = load_twins() if items == "twins" else read_items(items)
    data = items if isinstance(items, Dataset) else Dataset(list(items), [], "<items>")
    m = load_model(model)
    steps = ("weights", "v") if measure == "values" else ("weights",)
    used, scores, skipped = [], [], list(data.skipped)
    for lo in range(0, len(data.items), batch_size * 4):
        chunk = data.items[lo : lo + batch_size * 4]
        traces = trace_batch([it.text for it in chunk], m, steps=steps, batch_size=batch_size, truncate=True)
        for it, t in zip(chunk, traces):
            got = map_item(it, t, pieces)
            if isinstance(got, Skipped):
                skipped.append(got)
            else:
                used.append(it)
                scores.append(item_scores(t, got, measure))
        if progress is not None:
            progress(min(lo + len(chunk), len(data.items)), len(data.items))
    name = model_name(m, model)
    return analyse(
        scores,
        used,
        skipped=skipped,
        total=data.total,
        model=name,
        measure=measure,
        pieces=pieces,
        source=data.source,
        rounds=rounds,
        seed=seed,
        splits=splits,
    )
