"""Request and response models of ``POST /api/intervene`` (they join the OpenAPI schema at ``/openapi.json``).

An intervention is data: ``{"kind": "ablate" | "knockout" | "swap" | "patch", ...}``, the fields of the
matching :mod:`qkv.lens` call (``lens.ablate(layer=, head=, how=)``, ``lens.knockout(layer=, head=, query=,
keys=)``, ``lens.swap(layer=, step=, tokens=, head=)``, ``lens.patch(source, layer=, head=, step=)``); a run
that patches or resamples names its source run by its text. Requests are strict like the other endpoints'
(unknown fields and wrong types are refused with 422). Shape legend: ``N`` layers, ``H`` heads, ``L`` tokens.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from .schemas import DEFAULT_QUERY, DEFAULT_TEXT, QueryRef, Token, TokenRef

__all__ = [
    "AblateSpec",
    "KnockoutSpec",
    "SwapSpec",
    "PatchSpec",
    "InterventionSpec",
    "InterveneRequest",
    "InterveneResponse",
    "Metric",
    "MAX_INTERVENTIONS",
]

MAX_INTERVENTIONS = 128  #: interventions per request (MiniLM has 72 heads: every head fits)

_LAYER = "the layer (0-based; negative counts from the end); null: every layer"
_HEAD = "the head (0-based); null: every head of the layer"
_TOKEN = 'a token as Trace.index takes it: a word ("cat"), its n-th occurrence ("it@2") or an index'


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class AblateSpec(_Strict):
    """``lens.ablate(layer=, head=, how=)``: replace a head's output (before the output projection)."""

    kind: Literal["ablate"]
    layer: StrictInt | None = Field(description=_LAYER, examples=[3])
    head: StrictInt | None = Field(description=_HEAD, examples=[1])
    how: Literal["zero", "mean", "resample"] = Field(
        "zero",
        description="zero: the head's output is 0; mean: its mean over reference texts; resample: "
        "the output it has on `source`",
    )
    source: StrictStr | None = Field(None, description="resample only: the text whose output is taken")
    references: list[StrictStr] | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="mean only: reference texts (default: the library's documented default)",
    )


class KnockoutSpec(_Strict):
    """``lens.knockout(layer=, head=, query=, keys=)``: cut query->key edges; the row renormalises over the rest."""

    kind: Literal["knockout"]
    layer: StrictInt | None = Field(description=_LAYER, examples=[3])
    head: StrictInt | None = Field(description=_HEAD, examples=[1])
    query: TokenRef | None = Field(None, description=_TOKEN + "; default: the request's query")
    keys: list[TokenRef] = Field(min_length=1, description="the keys it may no longer attend to", examples=[["cat"]])


class SwapSpec(_Strict):
    """``lens.swap(layer=, step=, tokens=, head=)``: exchange two tokens' q, k or v."""

    kind: Literal["swap"]
    layer: StrictInt | None = Field(description=_LAYER, examples=[3])
    step: Literal["q", "k", "v"] = Field(
        description="k: who is found (the two tokens' scores swap); v: what is carried (the weights stay)"
    )
    tokens: list[TokenRef] = Field(min_length=2, max_length=2, description="two tokens", examples=[["cat", "mat"]])
    head: StrictInt | None = Field(None, description=_HEAD)


class PatchSpec(_Strict):
    """``lens.patch(source_trace, layer=, head=, step=)``: that step's tensor from a run on another text."""

    kind: Literal["patch"]
    source: StrictStr = Field(
        description="the other text (same number of tokens)", examples=["The cat sat on the mat because it was soft."]
    )
    layer: StrictInt | None = Field(description=_LAYER, examples=[3])
    head: StrictInt | None = Field(None, description=_HEAD)
    step: Literal["output", "q", "k", "v", "weights"] = "output"


InterventionSpec = Annotated[AblateSpec | KnockoutSpec | SwapSpec | PatchSpec, Field(discriminator="kind")]


class InterveneRequest(_Strict):
    """``POST /api/intervene``: one text, traced once as it is and once under the interventions, in order."""

    text: StrictStr = Field(
        description="the text (non-empty; at most the server's max_chars characters)", examples=[DEFAULT_TEXT]
    )
    interventions: list[InterventionSpec] = Field(
        max_length=MAX_INTERVENTIONS,
        description=f"applied in order (at most {MAX_INTERVENTIONS}); an empty list gives the plain trace",
        examples=[[{"kind": "ablate", "layer": 3, "head": 1}]],
    )
    query: TokenRef | None = Field(
        None,
        description=_TOKEN + "; the token whose weights are returned and whose preference is the metric "
        "(default: the first non-special token)",
        examples=[DEFAULT_QUERY],
    )
    prefer: TokenRef | None = Field(None, description="with `over`: the metric is the query's preference for it")
    over: TokenRef | None = Field(None, description="the token it is compared with (with `prefer`)")
    layer: StrictInt | None = Field(None, description="layer of the head shown (default: the first intervened one)")
    head: StrictInt | None = Field(None, description="head shown (default: the first intervened one)")
    include_trace: StrictBool = Field(
        False, description="also return the whole intervened trace (what the page draws), as /api/trace does"
    )


class Metric(_Answer):
    """A number computed from the model's output, on the plain run (``base``) and under the interventions."""

    name: str = Field(examples=["cos_preference"])
    description: str = Field(description="the formula, with the tokens it reads")
    method: str = Field(description="the interventions applied, in words")
    base: float = Field(description="on the plain run")
    value: float = Field(description="under the interventions")
    effect: float = Field(description="value - base")


class InterveneResponse(_Answer):
    """The answer of ``POST /api/intervene``."""

    schema_: str = Field(alias="schema", examples=["qkv.serve.intervene"])
    version: int
    text: str
    model: dict[str, Any]
    tokens: list[Token]
    query: QueryRef
    layer: int = Field(description="the head shown: its layer")
    head: int
    prefer: str | None
    over: str | None
    interventions: list[dict[str, Any]] = Field(
        description="what was applied, in order: the request's fields with tokens resolved to indices "
        "(`token_indices`) and a `label` in words"
    )
    metric: Metric
    metrics: list[Metric] = Field(description="every metric this model's output allows (the first is `metric`)")
    weights: list[list[list[float]]] = Field(description="(N, H, L): the query's weights under the interventions")
    base_weights: list[list[list[float]]] = Field(description="(N, H, L): the query's weights in the plain run")
    weight_change: list[list[float]] = Field(
        description="(N, H): total variation 0.5 * sum |weights - base_weights| of the query's row, per head"
    )
    summary: str
    trace: dict[str, Any] | None = Field(description="with include_trace: the intervened Trace.to_dict(4)")
    masked: list[list[int]] | None = Field(description="with include_trace: per query, keys no head may attend to")
    labels: list[str] | None = Field(description="with include_trace: each token's span of the text, as shown")
