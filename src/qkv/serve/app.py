"""The ``qkv serve`` web app (FastAPI): the page at ``/`` and the JSON API described at ``/openapi.json``.

* ``GET /`` -- the page: type a sentence, click a token, click a head, switch weights/values/rollout, drag t.
  ``GET /compare`` and ``GET /probe`` -- forms over the two endpoints below, with their results as tables.
* ``GET /static/{name}`` -- its four files (from a fixed table; no request path is ever opened).
* ``POST /api/trace`` ``{text, query?, layer?, head?, measure?, prefer?, over?, include_trace?}`` -> tokens,
  the query's weights/values ``(N, H, L)`` and rollout ``(N, L)``, one head's breakdown, the summary.
* ``POST /api/compare`` ``{text_a, text_b, query, prefer, over, measure?}`` -> per head preference in A and B.
* ``POST /api/probe`` ``{items, measure?, seed?}`` -> the probe over a small inline list of items (qkv's JSONL
  item schema): per-head accuracy with intervals, baselines, held-out best head, verdict (``qkv probe --json``).
* ``POST /api/intervene`` ``{text, interventions, query?, prefer?, over?, layer?, head?, include_trace?}`` -> the
  text traced plainly and under the interventions (ablate, knockout, swap, patch): the query's weights in both
  runs, the metric on both and its effect, what was applied (:mod:`qkv.serve.intervene`).
* ``GET /api/health`` -> model, limits, traces in flight.

Every error is JSON ``{"error": "..."}``: 400 malformed JSON or a bad Host, 404/405 unknown route or method,
413 body too large, 422 a body of the wrong shape, a text the model cannot take or a bad probe item (same wording
as the ``qkv`` command and the probe's reader), 503 with ``Retry-After`` when every trace slot and queue place is taken.
"""

from __future__ import annotations

import json
from typing import Any, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from ..lens.essay import ESSAY_SENTENCE
from ..lens.trace import Trace, count_tokens, load_model, max_positions, model_info, trace
from .errors import message
from .intervene import PlainRuns, intervene
from .intervene_schemas import InterveneRequest, InterveneResponse
from .limits import BodyLimit, Busy, Limits, TraceGate
from .page import CSP, SECURITY_HEADERS, assets, html_pages
from .schemas import (
    CompareRequest,
    CompareResponse,
    ErrorResponse,
    Health,
    ProbeRequest,
    ProbeResponse,
    TraceRequest,
    TraceResponse,
)
from .service import compare_payload, probe_items, probe_payload, trace_payload

__all__ = ["create_app", "LOOPBACK_HOSTS"]

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
_ERRORS = {code: {"model": ErrorResponse} for code in (400, 413, 422, 503)}


def _error(status: int, text: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": text}, status_code=status, headers=headers)


class _Guard:
    """ASGI middleware: answer only to allowed Host names (DNS rebinding) and add security headers."""

    def __init__(self, app, allowed: set[str] | None):
        self.app, self.allowed = app, allowed

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        host = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1")
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        name = name.strip("[]").lower()
        if self.allowed is not None and name not in self.allowed:
            names = ", ".join(sorted(self.allowed))
            return await _error(
                400,
                f"Host {host!r} is not served here; this server answers to {names} (open it as http://127.0.0.1:PORT/)",
            )(scope, receive, send)

        async def with_headers(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        await self.app(scope, receive, with_headers)


def create_app(
    model: Any = "minilm",
    *,
    limits: Limits | None = None,
    host: str = "127.0.0.1",
    tracer: Callable[[str, Any], Trace] = trace,
) -> FastAPI:
    """The app for one model, loaded now (anything :func:`qkv.lens.trace.load_model` takes).

    Args:
        model: what to trace with: a name/path (a family qkv does not re-implement loads through :mod:`qkv.hf`),
            a loaded qkv model, or a transformers model; ``/api/health`` reports :func:`qkv.lens.trace.model_info`.
        limits: text, body and concurrency limits (:class:`qkv.serve.limits.Limits`).
        host: the address the server binds; Host headers other than loopback names and this one are refused
            (none are when it is ``0.0.0.0`` or ``::``).
        tracer: ``tracer(text, model) -> Trace`` (tests substitute a slow one to fill the queue).
    """
    limits = limits or Limits()
    m = load_model(model)
    info = {**model_info(m, model), "max_positions": max_positions(m) if m.tokenizer is not None else None}
    gate = TraceGate(limits.running, limits.waiting, limits.retry_after)
    files = assets()
    pages = {path: page.encode() for path, page in html_pages(limits).items()}

    app = FastAPI(
        title="qkv serve",
        version="1",
        description="Attention in a real model, one sentence at a time: the JSON API behind the page.",
        docs_url=None,
        redoc_url=None,
    )  # Swagger UI would load from a CDN; the schema is at /openapi.json
    app.state.gate, app.state.limits, app.state.model_info = gate, limits, info

    # ------------------------------------------------------------------------------------------ errors
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        endpoint = f"{request.method} {request.url.path}"
        status, text = message(exc.errors(), endpoint, request.headers.get("content-type"))
        return _error(status, text)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException):
        if exc.status_code == 404:
            return _error(
                404,
                f"no such page or endpoint: {request.method} {request.url.path}; the API is "
                "POST /api/trace, POST /api/compare, POST /api/probe, POST /api/intervene, GET /api/health "
                "(schema at /openapi.json)",
            )
        if exc.status_code == 405:
            return _error(
                405,
                f"{request.method} is not allowed on {request.url.path}; "
                f"use {exc.headers.get('Allow', 'another method') if exc.headers else 'POST'}",
                headers=exc.headers,
            )
        return _error(exc.status_code, str(exc.detail), headers=exc.headers)

    @app.exception_handler(Busy)
    async def _busy(request: Request, exc: Busy):
        return _error(503, str(exc), headers={"Retry-After": str(exc.retry_after)})

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception):
        return _error(
            500,
            f"internal error ({type(exc).__name__}: {exc}); this is a bug in qkv serve, please "
            "report it with the request that caused it",
        )

    @app.exception_handler(ValueError)
    async def _bad_value(request: Request, exc: ValueError):
        return _error(422, " ".join(str(exc).split()))

    # ------------------------------------------------------------------------------------------ tracing
    def check_text(text: str, field: str = "text") -> None:
        """The CLI's checks, before the model runs: non-empty, not too long in characters or tokens."""
        if not text.strip():
            raise ValueError(f'"{field}" is empty; give a sentence such as "{ESSAY_SENTENCE}"')
        if len(text) > limits.max_chars:
            raise ValueError(
                f'"{field}" has {len(text):,} characters; this server traces at most '
                f"{limits.max_chars:,} (shorten the text, or start qkv serve with a larger limit)"
            )
        n = count_tokens(m, text)
        if n is not None and n > limits.max_tokens:
            raise ValueError(
                f'"{field}" is {n} tokens long; this server traces at most {limits.max_tokens} '
                f"tokens (shorten the text)"
            )

    async def run(work: Callable[[], dict], answer: type[BaseModel]) -> Response:
        """Compute ``work()`` in a trace slot; answer it as JSON after checking it is the route's ``answer``."""

        def body() -> str:
            doc = work()
            try:  # the route returns exactly what its response_model declares
                answer.model_validate(doc)
            except ValidationError as e:  # a ValueError, but qkv's bug, not the request's: a 500
                raise RuntimeError(f"the answer is not a {answer.__name__}: {e}") from None
            return json.dumps(doc, ensure_ascii=False, allow_nan=False)

        async with gate.slot():
            text = await run_in_threadpool(body)
        return Response(text, media_type="application/json", headers={"Cache-Control": "no-store"})

    # ------------------------------------------------------------------------------------------ routes
    @app.get("/", include_in_schema=False)
    @app.get("/compare", include_in_schema=False)
    @app.get("/probe", include_in_schema=False)
    async def index(request: Request) -> Response:
        return Response(
            pages[request.url.path],
            media_type="text/html; charset=utf-8",
            headers={"Content-Security-Policy": CSP, "Cache-Control": "no-store"},
        )

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        asset = files.get(name)
        if asset is None:
            return _error(404, f"no static file {name!r}; the page uses {', '.join(sorted(files))}")
        return Response(asset.body, media_type=asset.media_type, headers={"Cache-Control": "no-cache"})

    @app.get("/api/health", response_model=Health)
    async def health() -> dict:
        """The model served, the limits, and how many traces are running or waiting."""
        return {
            "status": "ok",
            "model": info,
            "limits": {k: getattr(limits, k) for k in limits.__dataclass_fields__},
            "in_flight": gate.in_flight,
            "refused": gate.refused,
        }

    @app.post("/api/trace", response_model=TraceResponse, responses=_ERRORS)
    async def api_trace(req: TraceRequest) -> Response:
        """Trace one text: what the query attends to in every head, and one head step by step."""
        check_text(req.text)
        return await run(
            lambda: trace_payload(
                tracer(req.text, m),
                query=req.query,
                layer=req.layer,
                head=req.head,
                measure=req.measure,
                prefer=req.prefer,
                over=req.over,
                include_trace=req.include_trace,
            ),
            TraceResponse,
        )

    @app.post("/api/compare", response_model=CompareResponse, responses=_ERRORS)
    async def api_compare(req: CompareRequest) -> Response:
        """A minimal pair: which heads change preference between ``prefer`` and ``over`` when one word changes."""
        check_text(req.text_a, "text_a")
        check_text(req.text_b, "text_b")
        return await run(
            lambda: compare_payload(
                tracer(req.text_a, m),
                tracer(req.text_b, m),
                query=req.query,
                prefer=req.prefer,
                over=req.over,
                measure=req.measure,
            ),
            CompareResponse,
        )

    @app.post("/api/probe", response_model=ProbeResponse, responses=_ERRORS)
    async def api_probe(req: ProbeRequest) -> Response:
        """Probe a small list of items: does any head attend to the right candidate more often than chance?

        The items are read and checked (schema, spans, lengths, at most ``max_items``) before the model runs;
        the probe then holds one trace slot, like a trace.
        """
        data = probe_items(req.items, max_items=limits.max_items, check_text=check_text)
        return await run(lambda: probe_payload(data, m, measure=req.measure, seed=req.seed), ProbeResponse)

    plain_runs = PlainRuns(m, tracer)  # the page asks about one text, one change at a time

    @app.post("/api/intervene", response_model=InterveneResponse, responses=_ERRORS)
    async def api_intervene(req: InterveneRequest) -> Response:
        """Intervene at the essay's steps (ablate a head, knock out an edge, swap two tokens' q/k/v, patch from
        another text): the query's weights and the metric, plain and under the interventions, in order."""
        check_text(req.text)
        for k, spec in enumerate(req.interventions):
            if getattr(spec, "source", None) is not None:
                check_text(spec.source, f"interventions[{k}].source")
        specs = [spec.model_dump() for spec in req.interventions]
        fields = req.model_dump(include={"query", "prefer", "over", "layer", "head", "include_trace"})
        return await run(lambda: intervene(m, req.text, specs, plain=plain_runs, **fields), InterveneResponse)

    allowed = None if host in ("0.0.0.0", "::", "") else {*LOOPBACK_HOSTS, host.strip("[]").lower()}
    app.add_middleware(BodyLimit, max_body=limits.max_body, max_drain=limits.max_drain)
    app.add_middleware(_Guard, allowed=allowed)
    return app
