"""Effects of interventions on what the model computes: a metric of its output, on the base run and under an
intervention. Every result names its metric, its method (how) and its base value.

Metrics (each a :class:`Metric`; ``bind`` resolves its tokens in a text and returns a batched function
``Forward -> (B,)`` that is differentiable, so attribution patching can take its gradient):

* :func:`preference` -- an encoder without a language-model head (the embedded MiniLM): the query token's
  preference in the last hidden states, ``cos(final[query], final[prefer]) - cos(final[query], final[over])``
  (a token set is averaged first);
* :func:`embedding_cosine` -- the sentence embedding's cosine to the un-intervened run's (1 on the base run);
* :func:`logit_diff` -- a model with a language-model head: ``logits[pos, answer] - logits[pos, other]``;
* any callable ``metric(trace) -> float`` (:class:`TraceMetric`: each run is a full :func:`qkv.trace`).

Example:
    >>> from qkv import lens
    >>> e = lens.effect("The cat sat on the mat because it was tired.", [lens.ablate(layer=0, head=None)],
    ...                 lens.preference("it", "cat", "mat"))
    >>> e.metric, e.how, e.effect != 0.0
    ('preference', 'zero', True)

Shapes: ``B`` rows (copies of one text), ``L`` tokens, ``E`` hidden size, ``V`` vocabulary.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..nn.hooks import hooks
from .adapters import Forward, ModelAdapter
from .interventions import Edit, Intervention, RowHooks, Target, compile_edits
from .loading import adapt
from .trace import Trace

__all__ = [
    "Metric",
    "Preference",
    "EmbeddingCosine",
    "LogitDiff",
    "TraceMetric",
    "preference",
    "embedding_cosine",
    "logit_diff",
    "as_metric",
    "Effect",
    "effect",
    "forward_rows",
    "torch_threads",
]

Bound = Callable[[Forward], Tensor]


class Metric:
    """A scalar of the model's output. ``name`` names it in every result; :meth:`bind` resolves it in a text."""

    name: str = "metric"
    needs_trace: bool = False

    def bind(self, target: Target, base: Forward) -> Bound:  # pragma: no cover - abstract
        """A function ``Forward (B rows of target's text) -> (B,)``; ``base`` is the un-intervened run (B = 1)."""
        raise NotImplementedError  # abstract: subclasses must implement

    def describe(self) -> str:
        return self.name


def _indices(target: Target, ref) -> list[int]:
    refs = list(ref) if isinstance(ref, (list, tuple)) else [ref]
    if not refs:
        raise ValueError("a token set is empty; expected at least one token (a word, word@n or an index)")
    return [target.index(r) for r in refs]


@dataclass(frozen=True)
class Preference(Metric):
    """``cos(final[query], final[prefer]) - cos(final[query], final[over])`` (each a token or a token set, averaged)."""

    query: Any
    prefer: Any
    over: Any
    name: str = "preference"

    def bind(self, target: Target, base: Forward | None = None) -> Bound:  # base unused: a preference is absolute
        q, a, b = (_indices(target, x) for x in (self.query, self.prefer, self.over))
        if set(a) == set(b):
            raise ValueError(f"prefer and over name the same tokens ({a}); expected two different tokens")

        def fn(fwd: Forward) -> Tensor:
            f = fwd.final.float()  # (B, L, E)
            fq, fa, fb = (f[:, i].mean(1) for i in (q, a, b))  # (B, E)
            return F.cosine_similarity(fq, fa, dim=-1) - F.cosine_similarity(fq, fb, dim=-1)

        return fn

    def describe(self) -> str:
        return f"cos(final[{self.query}], final[{self.prefer}]) - cos(final[{self.query}], final[{self.over}])"


@dataclass(frozen=True)
class EmbeddingCosine(Metric):
    """Cosine of the sentence embedding to the un-intervened run's (1.0 on the base run)."""

    name: str = "embedding_cosine"

    def bind(self, target: Target, base: Forward) -> Bound:
        if base.embedding is None:
            raise ValueError(
                f"{target.info['name']} pools no sentence embedding; expected a model such as the embedded MiniLM; "
                "use lens.preference(...) or lens.logit_diff(...) instead"
            )
        ref = base.embedding[0].detach().float()

        # (the ignore: fwd comes from the model whose base run pooled an embedding, checked above)
        return lambda fwd: F.cosine_similarity(fwd.embedding.float(), ref[None], dim=-1)  # type: ignore[union-attr]

    def describe(self) -> str:
        return "cos(embedding, embedding of the un-intervened run)"


@dataclass(frozen=True)
class LogitDiff(Metric):
    """``logits[position, answer] - logits[position, other]``: token ids, or strings that are one token each."""

    answer: Any
    other: Any
    position: Any = -1
    name: str = "logit_diff"

    def bind(self, target: Target, base: Forward) -> Bound:
        if base.logits is None:
            raise ValueError(
                f"{target.info['name']} has no language-model head (no logits); expected a causal LM such as GPT-2; "
                "use lens.preference(query, prefer, over) for an encoder"
            )
        V = base.logits.shape[-1]
        a, b = (_vocab_id(target.adapter, t, V) for t in (self.answer, self.other))
        pos = target.index(self.position)
        # (the ignore: fwd comes from the model whose base run had logits, checked above)
        return lambda fwd: fwd.logits[:, pos, a].float() - fwd.logits[:, pos, b].float()  # type: ignore[index]

    def describe(self) -> str:
        return f"logits[{self.position}, {self.answer!r}] - logits[{self.position}, {self.other!r}]"


def _vocab_id(adapter: ModelAdapter, token, V: int) -> int:
    if isinstance(token, int) and not isinstance(token, bool):
        if not 0 <= token < V:
            raise ValueError(f"token id {token} is out of range; expected 0..{V - 1}; pass an id of the vocabulary")
        return token
    enc = adapter.encode(str(token))
    ids = [i for i, s in zip(enc.ids, enc.special) if not s]
    if len(ids) != 1:
        raise ValueError(
            f"answer {token!r} is {len(ids)} tokens ({[t for t, s in zip(enc.tokens, enc.special) if not s]}); "
            "expected exactly one; pass a single-token word (GPT-2: with its leading space) or a token id"
        )
    return ids[0]


@dataclass(frozen=True)
class TraceMetric(Metric):
    """Any ``fn(trace) -> float``; each run is a full :func:`qkv.trace` (sweeps run one text per pass)."""

    fn: Callable[[Trace], float]
    name: str = "custom"
    needs_trace: bool = True

    def bind(self, target: Target, base: Forward) -> Bound:  # pragma: no cover - traces are used instead
        raise ValueError("a callable metric reads traces; run it through lens.effect or a sweep")


def preference(query, prefer, over) -> Preference:
    """The query's preference for ``prefer`` over ``over`` in the last hidden states (see :class:`Preference`)."""
    return Preference(query, prefer, over)


def embedding_cosine() -> EmbeddingCosine:
    """The sentence embedding's cosine to the un-intervened one (see :class:`EmbeddingCosine`)."""
    return EmbeddingCosine()


def logit_diff(answer, other, position=-1) -> LogitDiff:
    """The logit difference of two answer tokens at ``position`` (see :class:`LogitDiff`)."""
    return LogitDiff(answer, other, position)


def as_metric(metric: Any) -> Metric:
    """``metric`` as a :class:`Metric` (a callable ``fn(trace) -> float`` becomes a :class:`TraceMetric`)."""
    if isinstance(metric, Metric):
        return metric
    if callable(metric):
        return TraceMetric(metric, getattr(metric, "__name__", "custom"))
    raise ValueError(
        f"a metric is lens.preference(...), lens.logit_diff(...), lens.embedding_cosine() or fn(trace) -> float, "
        f"got {type(metric).__name__}; build one of those"
    )


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads (restored afterwards; ``None`` leaves torch as is).

    Sweeps run many small matrix products: one thread is fastest on a shared machine (a second thread waits for a
    core at every operation) -- 0.43 s vs 0.7-1.1 s for the 72-head MiniLM sweep at load 7 on 2 cores."""
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        raise ValueError(f"threads must be a positive int or None (leave torch as is), got {n!r}; e.g. threads=1")
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def forward_rows(
    adapter: ModelAdapter, target: Target, rows: Sequence[Sequence[Edit]], *, grad: bool = False
) -> Forward:
    """One pass over ``len(rows)`` copies of ``target``'s text, row ``b`` under ``rows[b]``'s edits."""
    ids = torch.tensor([target.ids] * len(rows), dtype=torch.long, device=adapter.device)  # (B, L)
    with torch.enable_grad() if grad else torch.no_grad(), hooks(RowHooks(rows)):
        return adapter.forward(ids, None)


@dataclass(frozen=True)
class Effect:
    """A metric on the base run and under interventions: ``effect = value - base``."""

    metric: str
    how: str
    base: float
    value: float

    @property
    def effect(self) -> float:
        return self.value - self.base

    def to_dict(self) -> dict:
        return {
            "metric": {"name": self.metric, "base": self.base},
            "how": self.how,
            "value": self.value,
            "effect": self.effect,
        }


def how_of(interventions: Sequence[Intervention]) -> str:
    """The methods of ``interventions``, in order (``"zero"``, ``"knockout, swap"``)."""
    return ", ".join(dict.fromkeys(iv.how for iv in interventions)) or "none"


def effect(text: str, interventions: Sequence[Intervention], metric: Any, model: Any = "minilm") -> Effect:
    """The metric on ``text`` without and with ``interventions`` (one pass of two rows for a batched metric)."""
    m = as_metric(metric)
    adapter = adapt(model)
    if isinstance(m, TraceMetric):  # needs_trace: each run is a full trace
        from .tracing import trace

        base = float(m.fn(trace(text, adapter)))
        return Effect(
            m.name, how_of(interventions), base, float(m.fn(trace(text, adapter, interventions=interventions)))
        )
    target = Target.of(adapter, text)
    fwd = forward_rows(adapter, target, [[], compile_edits(target, interventions)])
    fn = m.bind(target, Forward(fwd.final[:1], _row(fwd.logits), _row(fwd.embedding)))
    values = fn(fwd)
    return Effect(m.name, how_of(interventions), float(values[0]), float(values[1]))


def _row(t: Tensor | None) -> Tensor | None:
    return None if t is None else t[:1]
