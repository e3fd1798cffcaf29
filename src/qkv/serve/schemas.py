"""Request and response models of the ``qkv serve`` JSON API (they make the OpenAPI schema at ``/openapi.json``).

Requests are strict: a number where a string is expected (or ``true`` where an index is) is refused with 422,
unknown fields too (a typo such as ``"qeury"`` should not be silently ignored). Shape legend: ``N`` layers,
``H`` heads, ``L`` tokens.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from ..lens.essay import ESSAY_QUERY, ESSAY_SENTENCE

__all__ = [
    "TraceRequest",
    "CompareRequest",
    "ProbeRequest",
    "TraceResponse",
    "CompareResponse",
    "ProbeResponse",
    "Health",
    "ErrorResponse",
    "DEFAULT_TEXT",
    "DEFAULT_QUERY",
    "PROBE_ITEM_SCHEMA",
]

DEFAULT_TEXT = ESSAY_SENTENCE  #: alias of :data:`qkv.lens.essay.ESSAY_SENTENCE` (deprecated here)
DEFAULT_QUERY = ESSAY_QUERY  #: alias of :data:`qkv.lens.essay.ESSAY_QUERY` (deprecated here)

Measure = Literal["weights", "values", "rollout"]
TokenRef = StrictStr | StrictInt

_QUERY = 'the token whose attention is shown: a token ("it"), its n-th occurrence ("it@2") or an index'


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Answer(BaseModel):
    """A response: exactly the declared fields (the app validates what it returns against it)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class TraceRequest(_Strict):
    """``POST /api/trace``: one text, traced once."""

    text: StrictStr = Field(
        description="the text (non-empty; at most the server's max_chars characters)", examples=[DEFAULT_TEXT]
    )
    query: TokenRef | None = Field(
        None,
        description=_QUERY + "; default: the text's first pronoun (it, she, they, ...), else its first token",
        examples=[DEFAULT_QUERY],
    )
    layer: StrictInt | None = Field(None, description="layer of the breakdown (default: the best head's layer)")
    head: StrictInt | None = Field(
        None, description="head of the breakdown (default: the sharpest or the one that most prefers `prefer`)"
    )
    measure: Measure = Field("weights", description="weights: softmax(q.k/sqrt(d)); values: ||a f(v)||; rollout")
    prefer: TokenRef | None = Field(
        None,
        description="a token the query may prefer (with `over`); default on the essay's sentence with the query "
        "on its pronoun: cat",
    )
    over: TokenRef | None = Field(
        None, description="the token it is compared with (with `prefer`); default on the essay's sentence: mat"
    )
    include_trace: StrictBool = Field(
        False, description="also return the whole trace (every layer, head and query; what the page draws)"
    )


class CompareRequest(_Strict):
    """``POST /api/compare``: a minimal pair, two texts that differ in one word."""

    text_a: StrictStr = Field(examples=[DEFAULT_TEXT])
    text_b: StrictStr = Field(examples=["The cat sat on the mat because it was soft."])
    query: TokenRef | None = Field(
        None,
        description=_QUERY + "; default: each text's first pronoun, else its first token",
        examples=[DEFAULT_QUERY],
    )
    prefer: TokenRef = Field(description="a token in both texts", examples=["cat"])
    over: TokenRef = Field(description="another token in both texts", examples=["mat"])
    measure: Literal["weights", "values"] = "weights"


_SPAN = {
    "oneOf": [
        {"type": "string", "description": "a word of the text (its first whole-word occurrence)"},
        {
            "type": "object",
            "required": ["text", "start"],
            "properties": {
                "text": {"type": "string"},
                "start": {"type": "integer", "description": "character offset in text"},
            },
        },
    ]
}

#: One probe item, qkv's JSONL schema (:mod:`qkv.lens.probe_io`); checked by the probe's reader, not by pydantic,
#: so that a bad item is refused in the probe's own words.
PROBE_ITEM_SCHEMA = {
    "type": "object",
    "required": ["text", "query", "candidates", "answer"],
    "properties": {
        "id": {"type": "string", "description": "optional; default 'item i'"},
        "text": {"type": "string", "description": "the sentence (at most the server's max_chars / max_tokens)"},
        "query": {**_SPAN, "description": "the pronoun; a plain string must occur once (whole word)"},
        "candidates": {"type": "array", "minItems": 2, "items": _SPAN, "description": "the possible referents"},
        "answer": {
            "oneOf": [{"type": "integer"}, {"type": "string"}],
            "description": "index into candidates, or the text of one",
        },
        "pair": {
            "oneOf": [{"type": "string"}, {"type": "integer"}],
            "description": "optional: two items sharing it are twins (held-out splits keep them together)",
        },
    },
}
_CANDIDATES = [{"text": "The cat", "start": 0}, {"text": "the mat", "start": 15}]
_TWINS = [
    {
        "id": "cat-a",
        "text": DEFAULT_TEXT,
        "query": {"text": "it", "start": 31},
        "candidates": _CANDIDATES,
        "answer": 0,
        "pair": "cat",
    },
    {
        "id": "cat-b",
        "text": "The cat sat on the mat because it was soft.",
        "query": {"text": "it", "start": 31},
        "candidates": _CANDIDATES,
        "answer": 1,
        "pair": "cat",
    },
]


class ProbeRequest(_Strict):
    """``POST /api/probe``: a small inline list of items, probed at once (as ``qkv.lens.probe(items, model)``)."""

    items: list[Any] = Field(
        description="probe items in qkv's JSONL schema, one object each (at most the server's "
        "max_items, 64 by default: see /api/health)",
        json_schema_extra={"items": PROBE_ITEM_SCHEMA},
        examples=[_TWINS],
    )
    measure: Literal["weights", "values"] = Field(
        "weights", description="weights: softmax(q.k/sqrt(d)); values: ||a f(v)|| shares"
    )
    seed: StrictInt = Field(0, ge=0, le=2**63 - 1, description="seed of the held-out splits and the permutation null")


class Token(_Answer):
    index: int
    text: str = Field(description="the token as the tokenizer spells it")
    start: int = Field(description="character span in the text ((0, 0) for special tokens)")
    end: int
    special: bool = Field(description="added by the tokenizer ([CLS], [SEP])")


class QueryRef(_Answer):
    index: int
    token: str


class Row(_Answer):
    index: int
    token: str
    score: float = Field(description="q.k")
    scaled: float = Field(description="q.k / sqrt(d)")
    weight: float = Field(description="softmax(scaled)")
    value_norm: float = Field(description="||weight * f(v)|| (Kobayashi et al. 2020)")
    value_share: float = Field(description="value_norm / sum of the row's value_norm")


class Breakdown(_Answer):
    layer: int
    head: int
    rows: list[Row] = Field(description="L rows, one per key token")


class TraceResponse(_Answer):
    """The answer of ``POST /api/trace``."""

    schema_: str = Field(alias="schema", examples=["qkv.serve.trace"])
    version: int
    text: str
    model: dict[str, Any] = Field(description="name, model_type, num_layers, num_heads, num_kv_heads, head_dim")
    tokens: list[Token]
    query: QueryRef
    layer: int = Field(description="the head shown first (qkv.lens.heads.choose_head, as qkv explain): its layer")
    head: int
    measure: Measure
    prefer: str | None = Field(description="the pair's tokens (the essay's cat/mat by default on its sentence)")
    over: str | None
    weights: list[list[list[float]]] = Field(description="(N, H, L): the query's softmax weights in every head")
    values: list[list[list[float]]] = Field(description="(N, H, L): ||a f(v)|| normalised per row")
    rollout: list[list[float]] = Field(description="(N, L): rollout after each layer")
    breakdown: Breakdown
    summary: str
    caveat: str | None = Field(description="a caution when the head shown marks `prefer` for every token")
    trace: dict[str, Any] | None = Field(description="with include_trace: Trace.to_dict(4), schema qkv.trace")
    masked: list[list[int]] | None = Field(description="with include_trace: per query, keys no head may attend to")
    labels: list[str] | None = Field(description="with include_trace: each token's span of the text, as shown")


class HeadChange(_Answer):
    layer: int
    head: int
    diff_a: float = Field(description="measure(query->prefer) - measure(query->over) in text A")
    diff_b: float
    flipped: bool = Field(description="the sign changed, by any amount")
    clear: bool = Field(description="flipped by at least 0.05 on both sides (the margin qkv claims counts)")


class CompareResponse(_Answer):
    """The answer of ``POST /api/compare`` (the same content as the compare command's JSON)."""

    schema_: str = Field(alias="schema", examples=["qkv.serve.compare"])
    version: int
    texts: list[str]
    model: dict[str, Any]
    measure: str
    query: str
    prefer: str
    over: str
    heads: list[HeadChange] = Field(description="N * H heads, those that flip first, then by change")
    summaries: list[str]
    summary: str


class Score(_Answer):
    correct: int
    n: int
    accuracy: float
    ci_low: float = Field(description="exact (Clopper-Pearson) 95% interval")
    ci_high: float


class HeadScore(Score):
    layer: int
    head: int


class SkippedItem(_Answer):
    id: str
    line: int | None = Field(description="the item's index in `items`")
    reason: str


class ProbeItems(_Answer):
    total: int
    used: int
    skipped: list[SkippedItem]


class Splits(_Answer):
    n: int
    min: float
    median: float
    max: float


class HeadChosen(_Answer):
    layer: int
    head: int
    train_accuracy: float


class HeldOutScore(Score):
    seed: int = Field(description="the median split's seed")
    splits: Splits = Field(description="accuracy over every split")
    heads_chosen: list[HeadChosen] = Field(description="the best head of each half, scored on the other half")


class NullScore(_Answer):
    best_of_heads: float
    best_of_heads_p: float = Field(description="permutation p of the best head's accuracy (twin answers swapped)")
    rounds: int


class TwinScore(_Answer):
    pairs: int
    heads: int
    mean_flips: float = Field(description="heads whose pick differs between twins, mean per pair")
    flips_right: int
    flips_wrong: int
    toward_right: int
    toward_wrong: int
    sign_test_p: float


class ProbeResponse(_Answer):
    """The answer of ``POST /api/probe``: ``ProbeResult.to_dict()``, the same document the probe command writes."""

    schema_: str = Field(alias="schema", examples=["qkv.probe"])
    version: int
    model: str
    measure: Literal["weights", "values"]
    pieces: str
    source: str = Field(examples=["request"])
    items: ProbeItems
    layers: int
    heads_per_layer: int
    heads: list[HeadScore] = Field(description="N * H heads, best first")
    baselines: dict[str, Score] = Field(description="first-mentioned, nearest and random candidate on the same items")
    heldout: HeldOutScore | None = Field(
        description="best head chosen on half the pairs, scored on the other half "
        "(median of 21 splits); null with fewer than 2 groups"
    )
    mean_over_heads: float
    null: NullScore
    twins: TwinScore
    verdict: Literal["tracks the referent", "does not clear the baselines", "no better than chance"]
    reason: str


class Health(_Answer):
    status: Literal["ok"]
    model: dict[str, Any]
    limits: dict[str, int]
    in_flight: int = Field(description="traces running or waiting now")
    refused: int = Field(description="requests answered 503 so far")


class ErrorResponse(_Answer):
    error: str = Field(description="what was expected, what arrived and how to fix it")
