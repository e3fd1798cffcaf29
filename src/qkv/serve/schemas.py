"""Request and response models of the ``qkv serve`` JSON API (they make the OpenAPI schema at ``/openapi.json``).

Requests are strict: a number where a string is expected (or ``true`` where an index is) is refused with 422,
unknown fields too (a typo such as ``"qeury"`` should not be silently ignored). Shape legend: ``N`` layers,
``H`` heads, ``L`` tokens.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

__all__ = ["TraceRequest", "CompareRequest", "TraceResponse", "CompareResponse", "Health", "ErrorResponse",
           "DEFAULT_TEXT", "DEFAULT_QUERY"]

DEFAULT_TEXT = "The cat sat on the mat because it was tired."  #: the essay's sentence (as ``qkv explain``)
DEFAULT_QUERY = "it"

Measure = Literal["weights", "values", "rollout"]
TokenRef = StrictStr | StrictInt

_QUERY = 'the token whose attention is shown: a token ("it"), its n-th occurrence ("it@2") or an index'


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TraceRequest(_Strict):
    """``POST /api/trace``: one text, traced once."""

    text: StrictStr = Field(description="the text (non-empty; at most the server's max_chars characters)",
                            examples=[DEFAULT_TEXT])
    query: TokenRef | None = Field(None, description=_QUERY + "; default: the first non-special token",
                                   examples=[DEFAULT_QUERY])
    layer: StrictInt | None = Field(None, description="layer of the breakdown (default: the best head's layer)")
    head: StrictInt | None = Field(None, description="head of the breakdown (default: the sharpest or the one "
                                                     "that most prefers `prefer`)")
    measure: Measure = Field("weights", description="weights: softmax(q.k/sqrt(d)); values: ||a f(v)||; rollout")
    prefer: TokenRef | None = Field(None, description="a token the query may prefer (with `over`)")
    over: TokenRef | None = Field(None, description="the token it is compared with (with `prefer`)")
    include_trace: StrictBool = Field(False, description="also return the whole trace (every layer, head and "
                                                         "query; what the page draws)")


class CompareRequest(_Strict):
    """``POST /api/compare``: a minimal pair, two texts that differ in one word."""

    text_a: StrictStr = Field(examples=[DEFAULT_TEXT])
    text_b: StrictStr = Field(examples=["The cat sat on the mat because it was soft."])
    query: TokenRef = Field(DEFAULT_QUERY, description=_QUERY)
    prefer: TokenRef = Field(description="a token in both texts", examples=["cat"])
    over: TokenRef = Field(description="another token in both texts", examples=["mat"])
    measure: Literal["weights", "values"] = "weights"


class Token(BaseModel):
    index: int
    text: str = Field(description="the token as the tokenizer spells it")
    start: int = Field(description="character span in the text ((0, 0) for special tokens)")
    end: int
    special: bool = Field(description="added by the tokenizer ([CLS], [SEP])")


class QueryRef(BaseModel):
    index: int
    token: str


class Row(BaseModel):
    index: int
    token: str
    score: float = Field(description="q.k")
    scaled: float = Field(description="q.k / sqrt(d)")
    weight: float = Field(description="softmax(scaled)")
    value_norm: float = Field(description="||weight * f(v)|| (Kobayashi et al. 2020)")
    value_share: float = Field(description="value_norm / sum of the row's value_norm")


class Breakdown(BaseModel):
    layer: int
    head: int
    rows: list[Row] = Field(description="L rows, one per key token")


class TraceResponse(BaseModel):
    """The answer of ``POST /api/trace``."""

    schema_: str = Field(alias="schema", examples=["qkv.serve.trace"])
    version: int
    text: str
    model: dict[str, Any] = Field(description="name, model_type, num_layers, num_heads, num_kv_heads, head_dim")
    tokens: list[Token]
    query: QueryRef
    layer: int = Field(description="the head shown first: its layer")
    head: int
    measure: Measure
    prefer: str | None
    over: str | None
    weights: list[list[list[float]]] = Field(description="(N, H, L): the query's softmax weights in every head")
    values: list[list[list[float]]] = Field(description="(N, H, L): ||a f(v)|| normalised per row")
    rollout: list[list[float]] = Field(description="(N, L): rollout after each layer")
    breakdown: Breakdown
    summary: str
    trace: dict[str, Any] | None = Field(description="with include_trace: Trace.to_dict(4), schema qkv.trace")
    masked: list[list[int]] | None = Field(description="with include_trace: per query, keys no head may attend to")
    labels: list[str] | None = Field(description="with include_trace: each token's span of the text, as shown")


class HeadChange(BaseModel):
    layer: int
    head: int
    diff_a: float = Field(description="measure(query->prefer) - measure(query->over) in text A")
    diff_b: float
    flipped: bool


class CompareResponse(BaseModel):
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


class Health(BaseModel):
    status: Literal["ok"]
    model: dict[str, Any]
    limits: dict[str, int]
    in_flight: int = Field(description="traces running or waiting now")
    refused: int = Field(description="requests answered 503 so far")


class ErrorResponse(BaseModel):
    error: str = Field(description="what was expected, what arrived and how to fix it")
