"""BodyLimit at the ASGI level: an oversized body is read and dropped (up to max_drain) before its 413 is sent."""

import asyncio
import concurrent.futures
import json

from qkv.serve.limits import BodyLimit, Limits


def _run(coro):
    """``asyncio.run`` in a thread of its own: the session's sync Playwright (browser tests) keeps an event loop
    running in the main thread, where ``asyncio.run`` refuses to start another."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def run(max_body, max_drain, parts, declared=None):
    """Feed ``parts`` (bytes chunks) through BodyLimit: (status sent, chunks the middleware read, app called)."""
    headers = [(b"content-length", str(declared).encode())] if declared is not None else []
    scope = {"type": "http", "method": "POST", "headers": headers}
    read, sent, called = [], [], []

    async def receive():
        k = len(read)
        read.append(parts[k])
        return {"type": "http.request", "body": parts[k], "more_body": k < len(parts) - 1}

    async def send(message):
        sent.append(message)

    async def app(scope, receive, send):
        called.append((await receive())["body"])

    _run(BodyLimit(app, max_body=max_body, max_drain=max_drain)(scope, receive, send))
    status = next((m["status"] for m in sent if m["type"] == "http.response.start"), None)
    return status, len(read), called


def test_a_declared_oversized_body_is_drained_before_the_413():
    parts = [b"x" * 100] * 10
    assert run(max_body=150, max_drain=10_000, parts=parts, declared=1000) == (413, 10, [])


def test_a_streamed_oversized_body_is_drained_before_the_413():
    assert run(max_body=150, max_drain=10_000, parts=[b"x" * 100] * 10) == (413, 10, [])


def test_beyond_max_drain_the_413_comes_at_once():
    parts = [b"x" * 100] * 10
    assert run(max_body=150, max_drain=300, parts=parts, declared=1000) == (413, 0, [])  # declared: nothing read
    status, read, called = run(max_body=150, max_drain=300, parts=parts)  # streamed: stops past max_drain
    assert (status, called) == (413, []) and read == 4


def test_a_body_within_the_limit_reaches_the_app_whole():
    assert run(max_body=150, max_drain=300, parts=[b"a" * 50, b"b" * 50]) == (None, 2, [b"a" * 50 + b"b" * 50])


def test_the_413_says_what_arrived_and_the_limit():
    sent = []

    async def send(message):
        sent.append(message)

    _run(BodyLimit(None, max_body=64)._refuse(send, "1,000 bytes"))
    doc = json.loads(sent[1]["body"])
    assert doc == {
        "error": "the request body is 1,000 bytes; this server accepts at most 64 bytes (send a shorter text)"
    }
    assert Limits().max_drain == 16 * 1024 * 1024
