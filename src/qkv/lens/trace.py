"""``qkv.trace``: every step of attention, recorded from a real model's forward pass.

One :class:`Trace` holds, for one text, the tokens (with character offsets) and per layer and head the
tensors the model actually computed: ``q, k, v`` (after the projections), ``scores = q @ k^T``,
``scaled``, ``weights = softmax(scaled)`` and ``output = weights @ v`` (per head, before the output
projection), plus ``||f_h(v_j)||`` for value-norm attribution (see :mod:`qkv.lens.attribution`).

Shape legend: ``N`` layers, ``H`` query heads, ``Hkv`` key/value heads, ``L`` tokens, ``D`` head dim.

Queries (and ``prefer``/``over`` tokens) are named by a token string (first match; its exact case
first, else case-insensitive; WordPiece ``##`` and byte-level ``Ġ`` markers ignored), ``"it@2"`` for the 2nd
occurrence, or an integer index (also as a string, ``"8"``); :meth:`Trace.resolve` is the one rule for a
query and a ``prefer``/``over`` pair (with the defaults every view shares); :meth:`Trace.span` and
:meth:`Trace.token_at` select by character offset.

This module holds the record and its constants only (a batch trace recording only some steps holds ``None``
for the others). Traces are built by :func:`qkv.lens.tracing.trace`
(``qkv.trace``) through :mod:`qkv.lens.build`; models are read through :mod:`qkv.lens.adapters`. The names
``trace``, ``trace_batch``, ``load_model``, ``model_name``, ``model_info``, ``max_positions`` and ``count_tokens``
still resolve here (deprecated aliases: import them from :mod:`qkv.lens.tracing` / :mod:`qkv.lens.loading`).

Example (a synthetic trace; ``qkv.trace(text)`` builds one from a model):
    >>> import torch
    >>> from qkv.lens.trace import Trace
    >>> w = torch.tensor([[[[1.0, 0.0], [0.75, 0.25]]]])                  # (N=1, H=1, L=2, L=2)
    >>> t = Trace.from_tensors("a b", ["a", "b"], weights=w)
    >>> [(a.token, a.value) for a in t.top("b", k=2)]
    [('a', 0.75), ('b', 0.25)]
"""

from __future__ import annotations

import importlib
import json
import warnings
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Sequence

import torch
from torch import Tensor

from .attribution import normalise_rows, rollout
from .essay import ESSAY_SENTENCE
from .naming import resolve, token_index
from .rows import Attended, BreakdownRow, HeadPreference, Resolved

__all__ = [
    "Trace",
    "Attended",
    "HeadPreference",
    "BreakdownRow",
    "Resolved",
    "MEASURES",
    "ESSAY_SENTENCE",
    "SCHEMA_VERSION",
    "UNKNOWN_TOKENS",
]

# Names this module re-exported before the builders moved out (deprecated; resolved lazily, never imported here).
_MOVED = {
    "trace": "qkv.lens.tracing",
    "trace_batch": "qkv.lens.tracing",
    "load_model": "qkv.lens.loading",
    "model_name": "qkv.lens.loading",
    "model_info": "qkv.lens.loading",
    "max_positions": "qkv.lens.loading",
    "count_tokens": "qkv.lens.loading",
}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        warnings.warn(
            f"qkv.lens.trace.{name} moved to {_MOVED[name]}.{name} (qkv.trace for trace); import it from there",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module 'qkv.lens.trace' has no attribute {name!r}")


MEASURES = ("weights", "values", "rollout")
_html_display = None  # fn(trace) -> html for notebooks: the lens does not draw, the view layer installs one


def set_html_display(fn) -> None:
    """Install ``fn(trace) -> html`` as :meth:`Trace._repr_html_` (done by :mod:`qkv.view.notebook`)."""
    global _html_display
    _html_display = fn


#: How tokenizers spell "not in my vocabulary" (WordPiece, SentencePiece, some BPEs).
UNKNOWN_TOKENS = frozenset({"[UNK]", "<unk>", "<|unk|>"})
SCHEMA_VERSION = 1


@dataclass(repr=False)
class Trace:
    """Recorded attention of one text through one model (batch of one; every tensor float32, CPU).

    Attributes:
        text: the input text.
        tokens: ``L`` token strings as the tokenizer spells them.
        offsets: ``L`` ``(start, end)`` character spans in ``text`` (``(0, 0)`` for specials).
        special: ``L`` flags for tokens the tokenizer added (``[CLS]``, ``[SEP]``).
        model: ``name, model_type, num_layers, num_heads, num_kv_heads, head_dim``.
        q: ``(N, H, L, D)``; k, v: ``(N, Hkv, L, D)`` (may be None in synthetic traces).
        scores, scaled, weights: ``(N, H, L, L)``; output: ``(N, H, L, D)`` or None.
        fv_norms: ``(N, H, L)`` ``||f_h(v_j)||`` (ones when unknown, making ``values`` == ``weights``).
        final: ``(L, E)`` the model's last hidden states (transformers' ``last_hidden_state``), or None.
        logits: ``(L, V)`` next-token logits of a model with a language-model head, else None.
        embedding: ``(E,)`` the sentence embedding of a model that pools one (MiniLM), else None.

    A batch trace recording only some steps (:func:`trace_batch`) holds ``None`` for the others
    (``scores``, ``scaled``; ``fv_norms`` without ``v``).
    """

    text: str
    tokens: list[str]
    offsets: list[tuple[int, int]]
    special: list[bool]
    model: dict
    weights: Tensor
    scores: Tensor | None
    scaled: Tensor | None
    fv_norms: Tensor | None
    q: Tensor | None = None
    k: Tensor | None = None
    v: Tensor | None = None
    output: Tensor | None = None
    final: Tensor | None = None
    logits: Tensor | None = None
    embedding: Tensor | None = None

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_tensors(
        cls,
        text: str,
        tokens: Sequence[str],
        *,
        weights: Tensor,
        scores: Tensor | None = None,
        scaled: Tensor | None = None,
        fv_norms: Tensor | None = None,
        offsets: Sequence[tuple[int, int]] | None = None,
        special: Sequence[bool] | None = None,
        model: dict | None = None,
        **tensors: Tensor,
    ) -> "Trace":
        """A trace from given tensors (``weights`` ``(N, H, L, L)``; others default from it) -- for tests and views."""
        if weights.dim() != 4 or weights.shape[-1] != weights.shape[-2] or weights.shape[-1] != len(tokens):
            raise ValueError(f"weights must be (N, H, L, L) with L = {len(tokens)} tokens, got {tuple(weights.shape)}")
        N, H, L, _ = weights.shape
        scaled = weights.clamp_min(1e-12).log() if scaled is None else scaled
        scores = scaled if scores is None else scores
        info = {
            "name": "synthetic",
            "model_type": "synthetic",
            "num_layers": N,
            "num_heads": H,
            "num_kv_heads": H,
            "head_dim": 0,
            **(model or {}),
        }
        return cls(
            text=text,
            tokens=list(tokens),
            offsets=list(offsets or [(0, 0)] * L),
            special=list(special or [False] * L),
            model=info,
            weights=weights.float(),
            scores=scores.float(),
            scaled=scaled.float(),
            fv_norms=torch.ones(N, H, L) if fv_norms is None else fv_norms.float(),
            **tensors,
        )

    def __repr__(self) -> str:
        return (
            f"Trace({self.text!r}, model={self.model['name']!r}, tokens={len(self.tokens)}, "
            f"layers={self.num_layers}, heads={self.num_heads})"
        )

    # ---------------------------------------------------------------- sizes and names
    @property
    def num_layers(self) -> int:
        return self.weights.shape[0]

    @property
    def num_heads(self) -> int:
        return self.weights.shape[1]

    def __len__(self) -> int:
        return len(self.tokens)

    def check_layer(self, layer: int) -> int:
        """``layer`` if in range (negative counts from the end), else a ValueError saying the range."""
        return self._check_index("layer", layer, self.num_layers, "layers")

    def check_head(self, head: int) -> int:
        """``head`` if in range (negative counts from the end), else a ValueError saying the range."""
        return self._check_index("head", head, self.num_heads, "heads")

    def _check_index(self, what: str, value, n: int, plural: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{what} must be an integer (0..{n - 1}), got {type(value).__name__} {value!r}")
        if not -n <= value < n:
            raise ValueError(f"{what} {value} is out of range; {self.model['name']} has {n} {plural} (0..{n - 1})")
        return value % n

    def index(self, query: str | int) -> int:
        """Position of a token: an int index, a token string (first match) or ``"tok@n"`` (n-th match).

        A string is matched against the tokens as the user would type them (WordPiece ``##``, byte-level
        ``Ġ`` and SentencePiece ``▁`` markers dropped): with its exact case when some token has it, else
        case-insensitively (``"It"`` finds ``it`` in an uncased vocabulary, and ``It`` before ``it`` in a
        cased one). A string of digits that is no token is an index (``"8"`` is token 8), so a word, its
        ``@n`` occurrence and an index name a token the same way whatever their case or type.

        Raises:
            ValueError: the token is not in the text (the message lists close matches, or the pieces a word
                was split into), the occurrence or index is out of range, or the query is neither a string
                nor an integer.
        """
        return token_index(self, query)

    def resolve(
        self, query: str | int | None = None, prefer: str | int | None = None, over: str | int | None = None
    ) -> Resolved:
        """The indices of a query and of an optional ``prefer``/``over`` pair: the one rule every view uses.

        ``query=None`` picks the text's first pronoun (:data:`qkv.lens.essay.PRONOUNS`: the essay asks what a
        pronoun attends to), else its first non-special token. ``prefer``/``over`` both or neither; with
        neither, on the essay's sentence (:data:`qkv.lens.essay.ESSAY_SENTENCE`) with the query on its pronoun
        -- however the query was named (``"it"``, ``"It"``, ``8``, ``"it@1"``) -- the pair is the essay's
        :data:`~qkv.lens.essay.ESSAY_PAIR` (cat over mat).

        Returns:
            ``Resolved(query, prefer, over)``: token indices (``prefer``/``over`` None without a pair).

        Raises:
            ValueError: a token not in the text (``prefer: ...``/``over: ...`` for the pair), only one of
                ``prefer``/``over``, or both naming the same token.
        """
        return resolve(self, query, prefer, over)

    # ---------------------------------------------------------------- vocabulary
    @property
    def unknown(self) -> list[int]:
        """Positions of tokens the model's vocabulary does not know (``[UNK]``, ``<unk>``)."""
        return [j for j, tok in enumerate(self.tokens) if tok in UNKNOWN_TOKENS]

    @property
    def mostly_unknown(self) -> bool:
        """True when most of the text's (non-special) tokens are unknown to the model's vocabulary."""
        words = sum(1 for s in self.special if not s)
        return words > 0 and 2 * len(self.unknown) > words

    def vocabulary_note(self) -> str | None:
        """Why a text's tokens became ``[UNK]`` and what to do about it; None when none did.

        Example:
            >>> import torch
            >>> t = Trace.from_tensors("猫", ["[CLS]", "[UNK]", "[SEP]"], weights=torch.ones(1, 1, 3, 3) / 3,
            ...                        special=[True, False, True], model={"name": "minilm"})
            >>> print(t.vocabulary_note())  # doctest: +NORMALIZE_WHITESPACE
            1 of the 1 tokens of the text became [UNK]: the vocabulary of minilm has no entry for them (the
            embedded MiniLM's vocabulary is English; Chinese characters become [UNK]). To see attention on this
            text, trace it with a model whose vocabulary covers it: pass model="DIR" with DIR a local checkpoint
            directory, e.g. a copy of bert-base-chinese for Chinese.
        """
        unknown = self.unknown
        if not unknown:
            return None
        words = sum(1 for s in self.special if not s)
        spelled = "/".join(dict.fromkeys(self.tokens[j] for j in unknown))
        name = self.model.get("name", "the model")
        english = (
            " (the embedded MiniLM's vocabulary is English; Chinese characters become [UNK])"
            if name == "minilm"
            else ""
        )
        return (
            f"{len(unknown)} of the {words} tokens of the text became {spelled}: the vocabulary of {name} has "
            f"no entry for them{english}. To see attention on this text, trace it with a model whose vocabulary "
            f'covers it: pass model="DIR" with DIR a local checkpoint directory, e.g. a copy of '
            f"bert-base-chinese for Chinese."
        )

    def span(self, start: int, end: int) -> list[int]:
        """Indices of the (non-special) tokens overlapping characters ``[start, end)`` of the text, in order.

        Example: in ``"it is it"`` ``span(6, 8)`` is the second ``it`` whatever the first one is.
        """
        if not (isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= len(self.text)):
            raise ValueError(
                f"character span {start}..{end} is not a non-empty range within the text (0..{len(self.text)})"
            )
        return [
            j
            for j, ((a, b), sp) in enumerate(zip(self.offsets, self.special))
            if not sp and a < end and b > start and b > a
        ]

    def token_at(self, offset: int) -> int:
        """Index of the token covering character ``offset`` of the text.

        Raises:
            ValueError: the offset is out of range or falls between tokens (whitespace, or cut off by truncation).
        """
        if not isinstance(offset, int) or not 0 <= offset < len(self.text):
            raise ValueError(f"character offset {offset!r} is out of range; the text has {len(self.text)} characters")
        hits = self.span(offset, offset + 1)
        if not hits:
            raise ValueError(
                f"no token covers character {offset} ({self.text[offset]!r}); pick an offset inside a word"
            )
        return hits[0]

    # ---------------------------------------------------------------- measures
    def _need(self, what: str, steps: str) -> Tensor:
        value = getattr(self, what)
        if value is None:
            raise ValueError(
                f"this trace did not record {steps}; trace with steps including {steps} "
                f"(or qkv.trace(text) for every step)"
            )
        return value

    @cached_property
    def values(self) -> Tensor:
        """``(N, H, L, L)`` value-norm attribution ``||a_ij f_h(v_j)||``, normalised per row."""
        return normalise_rows(self.weights * self._need("fv_norms", "'v'").unsqueeze(-2))

    @cached_property
    def value_norms(self) -> Tensor:
        """``(N, H, L, L)`` raw ``||a_ij f_h(v_j)||`` (not normalised)."""
        return self.weights * self._need("fv_norms", "'v'").unsqueeze(-2)

    @cached_property
    def rollout(self) -> Tensor:
        """``(N, L, L)`` attention rollout after each layer (rows sum to 1)."""
        return torch.stack(rollout([w.unsqueeze(0) for w in self.weights])).squeeze(1)

    def attention(self, layer: int, head: int) -> Tensor:
        """The softmax weights ``(L, L)`` of one head (row = query, column = key)."""
        return self.weights[self.check_layer(layer), self.check_head(head)]

    def matrix(self, layer: int, head: int | None = None, measure: str = "weights") -> Tensor:
        """``(L, L)`` of one head under ``measure``; ``head=None`` averages heads; rollout ignores ``head``."""
        layer = self.check_layer(layer)
        if measure == "rollout":
            return self.rollout[layer]
        m = self._measure(measure)[layer]  # (H, L, L)
        return m.mean(0) if head is None else m[self.check_head(head)]

    def _measure(self, measure: str) -> Tensor:
        if measure == "weights":
            return self.weights
        if measure == "values":
            return self.values
        raise ValueError(f"measure must be one of {', '.join(MEASURES)}, got {measure!r}")

    def row(
        self, query: str | int, layer: int | None = None, head: int | None = None, measure: str = "weights"
    ) -> Tensor:
        """``(L,)`` how much ``query`` takes from each key; ``None`` layer/head average over them.

        ``rollout`` combines all heads (``head`` must be None) and ``layer=None`` means the last layer.
        """
        i = self.index(query)
        if measure == "rollout":
            if head is not None:
                raise ValueError("rollout combines all heads of a layer; do not pass a head with measure='rollout'")
            return self.rollout[self.check_layer(-1 if layer is None else layer), i]
        m = self._measure(measure)[:, :, i]  # (N, H, L)
        m = m.mean(0) if layer is None else m[self.check_layer(layer)]
        return m.mean(0) if head is None else m[self.check_head(head)]

    def top(
        self,
        query: str | int,
        k: int = 5,
        layer: int | None = None,
        head: int | None = None,
        measure: str = "weights",
        skip_special: bool = False,
    ) -> list[Attended]:
        """The ``k`` keys ``query`` attends to most (see :meth:`row` for ``layer``/``head``/``measure``)."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be an integer >= 1, got {k!r}")
        r = self.row(query, layer, head, measure)
        order = [
            j for j in torch.argsort(r, descending=True, stable=True).tolist() if not (skip_special and self.special[j])
        ]
        return [Attended(j, self.tokens[j], float(r[j])) for j in order[:k]]

    def heads(
        self, query: str | int, prefer: str | int, over: str | int, measure: str = "weights"
    ) -> list[HeadPreference]:
        """Every head ranked by ``measure(query -> prefer) - measure(query -> over)``, best first."""
        i, a, b = self.index(query), self.index(prefer), self.index(over)
        if a == b:
            raise ValueError(f"prefer and over name the same token ({self.tokens[a]!r} at {a}); pick two tokens")
        m = self._measure(measure)[:, :, i]  # (N, H, L)
        out = [
            HeadPreference(n, h, float(m[n, h, a]), float(m[n, h, b]), float(m[n, h, a] - m[n, h, b]))
            for n in range(self.num_layers)
            for h in range(self.num_heads)
        ]
        return sorted(out, key=lambda p: -p.diff)

    def breakdown(self, query: str | int, layer: int, head: int) -> list[BreakdownRow]:
        """One row per key token: ``q.k``, scaled score, softmax weight, ``||a f(v)||`` and its share."""
        i, n, h = self.index(query), self.check_layer(layer), self.check_head(head)
        scores, scaled = self._need("scores", "'scores'"), self._need("scaled", "'scaled'")
        raw, share = self.value_norms[n, h, i], self.values[n, h, i]
        scores, scaled = self._need("scores", "'scores'"), self._need("scaled", "'scaled'")
        return [
            BreakdownRow(
                j,
                t,
                float(scores[n, h, i, j]),
                float(scaled[n, h, i, j]),
                float(self.weights[n, h, i, j]),
                float(raw[j]),
                float(share[j]),
            )
            for j, t in enumerate(self.tokens)
        ]

    # ---------------------------------------------------------------- export
    def token_records(self) -> list[dict]:
        """``L`` dicts ``{"index", "text", "start", "end", "special"}``: the tokens as JSON documents hold them."""
        return [
            {"index": j, "text": t, "start": s, "end": e, "special": sp}
            for j, (t, (s, e), sp) in enumerate(zip(self.tokens, self.offsets, self.special))
        ]

    def to_dict(self, decimals: int = 5) -> dict:
        """The trace as plain JSON data (schema version :data:`SCHEMA_VERSION`).

        Schema::

            {"schema": "qkv.trace", "version": 1,
             "text": str,
             "model": {"name", "model_type", "num_layers", "num_heads", "num_kv_heads", "head_dim"},
             "tokens": [{"index": int, "text": str, "start": int, "end": int, "special": bool}],  # L
             "layers": [{"layer": int,                                                        # N
                         "scores":  [H][L][L] float,   # q.k (row = query, column = key)
                         "scaled":  [H][L][L] float,   # scores * 1/sqrt(D)
                         "weights": [H][L][L] float,   # softmax(scaled); rows sum to 1
                         "values":  [H][L][L] float,   # ||a_ij f(v_j)|| normalised per row
                         "value_norms": [H][L] float,  # ||f_h(v_j)||
                         "rollout": [L][L] float}]}    # rollout after this layer; rows sum to 1

        Numbers are rounded to ``decimals`` places.
        """

        def num(t: Tensor) -> list:
            return t.double().round(decimals=decimals).tolist()

        parts = {
            "scores": self.scores,
            "scaled": self.scaled,
            "weights": self.weights,  # a batch trace may lack some
            "values": None if self.fv_norms is None else self.values,
            "value_norms": self.fv_norms,
        }
        layers = [
            {"layer": n, **{k: num(v[n]) for k, v in parts.items() if v is not None}, "rollout": num(self.rollout[n])}
            for n in range(self.num_layers)
        ]
        tokens = self.token_records()
        return {
            "schema": "qkv.trace",
            "version": SCHEMA_VERSION,
            "text": self.text,
            "model": dict(self.model),
            "tokens": tokens,
            "layers": layers,
        }

    def to_json(self, indent: int | None = None, decimals: int = 5) -> str:
        """:meth:`to_dict` as a JSON string (see its schema)."""
        return json.dumps(self.to_dict(decimals), indent=indent, ensure_ascii=False)

    # ---------------------------------------------------------------- notebooks
    def _repr_html_(self) -> str | None:
        """Jupyter's inline display: the self-contained page in a sandboxed iframe, drawn by the view layer
        (:func:`qkv.view.notebook.notebook_html`, installed by ``import qkv.view`` -- ``qkv.trace`` does it);
        None (plain repr) when no view is installed."""
        return None if _html_display is None else _html_display(self)

    def to_bertviz(self) -> tuple[tuple[Tensor, ...], list[str]]:
        """``(attention, tokens)`` as ``bertviz.head_view(attention, tokens)`` takes them: one
        ``(1, H, L, L)`` weight tensor per layer, and the ``L`` token strings."""
        return tuple(w.unsqueeze(0).clone() for w in self.weights), list(self.tokens)
