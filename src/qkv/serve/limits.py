"""The limits of ``qkv serve``: text length, request body size and a bounded queue of traces.

Nothing here imports a web framework: :class:`BodyLimit` is a plain ASGI middleware and :class:`TraceGate`
an asyncio counter, so both are usable (and testable) without the ``serve`` extra.

Example:
    >>> import asyncio
    >>> gate = TraceGate(running=1, waiting=0)
    >>> async def two_at_once():
    ...     async with gate.slot():
    ...         try:
    ...             async with gate.slot():
    ...                 return "second got in"
    ...         except Busy as e:
    ...             return f"second refused: {e.in_flight} in flight"
    >>> from concurrent.futures import ThreadPoolExecutor  # a fresh event loop in its own thread
    >>> ThreadPoolExecutor(1).submit(asyncio.run, two_at_once()).result()
    'second refused: 1 in flight'
"""

from __future__ import annotations

import asyncio
import json
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import AsyncIterator

__all__ = ["Limits", "TraceGate", "Busy", "BodyLimit"]


@dataclass(frozen=True)
class Limits:
    """What one server accepts.

    Attributes:
        max_chars: characters per text (a text longer than this is refused with 422).
        max_tokens: tokens per traced text (the page embeds ``layers x (4 heads + 1) x tokens^2`` numbers).
        max_body: bytes per request body (413 beyond it, before any JSON is parsed).
        max_items: items per ``POST /api/probe`` (more are refused with 422; each text within ``max_chars`` and
            ``max_tokens``). The whole probe holds one trace slot.
        running: traces computed at once (each one a forward pass on the CPU threads torch uses).
        waiting: traces allowed to wait for a slot; one more gets 503 with ``Retry-After``.
        retry_after: seconds suggested in ``Retry-After``.
        max_drain: bytes of an oversized body read and dropped before its 413 is sent, so that the client, still
            sending, reads the answer instead of a connection reset; a body declared larger than this is answered
            at once (and the connection closed).
    """

    max_chars: int = 500
    max_tokens: int = 64
    max_body: int = 64 * 1024
    max_items: int = 64
    running: int = 2
    waiting: int = 8
    retry_after: int = 1
    max_drain: int = 16 * 1024 * 1024

    def __post_init__(self):
        for name in ("max_chars", "max_tokens", "max_body", "max_items", "running", "retry_after", "max_drain"):
            if getattr(self, name) < 1:
                raise ValueError(f"Limits.{name} must be >= 1, got {getattr(self, name)}")
        if self.waiting < 0:
            raise ValueError(f"Limits.waiting must be >= 0, got {self.waiting}")


class Busy(Exception):
    """Every slot and every place in the queue is taken (answered with 503 and ``Retry-After``)."""

    def __init__(self, in_flight: int, retry_after: int):
        super().__init__(f"the server is busy: {in_flight} traces are running or waiting; retry in {retry_after} s")
        self.in_flight = in_flight
        self.retry_after = retry_after


class TraceGate:
    """At most ``running`` traces at once and ``waiting`` more queued; beyond that :class:`Busy` at once.

    The count is checked and taken without an ``await`` in between, so it is exact on one event loop.
    """

    def __init__(self, running: int = 2, waiting: int = 8, retry_after: int = 1):
        self.running, self.waiting, self.retry_after = running, waiting, retry_after
        self.in_flight = 0
        self.refused = 0
        self._sem: asyncio.Semaphore | None = None  # made inside the event loop that uses it
        self._loop: asyncio.AbstractEventLoop | None = None

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one trace slot for the ``async with`` block (waiting in the queue if needed), or raise Busy."""
        if self.in_flight >= self.running + self.waiting:
            self.refused += 1
            raise Busy(self.in_flight, self.retry_after)
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._sem, self._loop = asyncio.Semaphore(self.running), loop
        self.in_flight += 1
        try:
            async with self._sem:
                yield
        finally:
            self.in_flight -= 1


class BodyLimit:
    """ASGI middleware: answer 413 (JSON ``{"error": ...}``) to a request whose body exceeds ``max_body`` bytes.

    The body is read (at most ``max_body`` bytes are kept) and replayed to the app, so a chunked upload cannot
    slip past. An oversized body -- declared by ``Content-Length`` or found while reading -- is read on and
    dropped up to ``max_drain`` bytes before the 413 is sent: a server that answers and closes while the client
    is still sending makes the client's TCP stack see a reset instead of the answer (it happened under load).
    Only a body larger than ``max_drain`` is answered at once, and its connection closed.
    """

    def __init__(self, app, max_body: int, max_drain: int = 16 * 1024 * 1024):
        self.app, self.max_body, self.max_drain = app, max_body, max(max_drain, max_body)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            if int(declared) <= self.max_drain and not await self._drain(receive, 0):
                return  # the client went away
            return await self._refuse(send, f"{int(declared):,} bytes")
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            more = message.get("more_body", False)
            if size > self.max_body:
                if more and not await self._drain(receive, size):
                    return
                return await self._refuse(send, f"more than {self.max_body:,} bytes")
            chunks.append(chunk)
            if not more:
                break
        body, sent = b"".join(chunks), False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _drain(self, receive, size: int) -> bool:
        """Read and drop the rest of the body, up to ``max_drain`` bytes in all; False if the client left."""
        while size <= self.max_drain:
            message = await receive()
            if message["type"] == "http.disconnect":
                return False
            size += len(message.get("body", b""))
            if not message.get("more_body", False):
                break
        return True

    async def _refuse(self, send, got: str) -> None:
        doc = {
            "error": f"the request body is {got}; this server accepts at most {self.max_body:,} bytes "
            f"(send a shorter text)"
        }
        body = json.dumps(doc).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
