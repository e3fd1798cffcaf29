"""A bounded load test on loopback: 240 requests from 24 concurrent clients against a real `qkv serve`.

Every request must be answered (200, or 503 with Retry-After when the queue is full), none lost or 5xx
otherwise; the server's memory must stay bounded. Latencies (p50/p95) are printed (``pytest -s``).
"""

import socket
import statistics
import threading
import time

import httpx
import pytest

from .conftest import Served

CLIENTS, PER_CLIENT = 24, 10
TEXTS = [
    "The cat sat on the mat because it was tired.",
    "The cat sat on the mat because it was soft.",
    "Paris is the capital of France.",
    "The dog chased the ball because it was fast.",
]


@pytest.fixture(scope="module")
def server():
    s = Served("--workers", "2", "--queue", "8")
    yield s
    assert s.stop() == 0, s.lines


def percentile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def test_load_every_request_answered_memory_bounded(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:  # warm up: allocator and caches settle
        for text in TEXTS:
            assert c.post("/api/trace", json={"text": text, "include_trace": True}).status_code == 200
    rss_before = server.rss_mb()
    results, errors = [], []
    lock = threading.Lock()

    def client(k: int):
        with httpx.Client(base_url=server.url, timeout=60) as c:
            for n in range(PER_CLIENT):
                body = {
                    "text": TEXTS[(k + n) % len(TEXTS)],
                    "query": "it" if (k + n) % 4 != 2 else "capital",
                    "include_trace": n % 5 == 0,
                }
                t0 = time.perf_counter()
                try:
                    r = c.post("/api/trace", json=body)
                except httpx.HTTPError as e:  # a lost request: counted, never raised in a thread
                    with lock:
                        errors.append(repr(e))
                    continue
                dt = time.perf_counter() - t0
                with lock:
                    results.append((r.status_code, dt, r.headers.get("retry-after"), r.json()))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(CLIENTS)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    wall = time.perf_counter() - start
    rss_after = server.rss_mb()

    assert errors == [] and len(results) == CLIENTS * PER_CLIENT  # none lost
    codes = [r[0] for r in results]
    assert set(codes) <= {200, 503}, sorted(set(codes))
    ok = [r for r in results if r[0] == 200]
    busy = [r for r in results if r[0] == 503]
    assert all(r[2] == "1" and "busy" in r[3]["error"] for r in busy)
    assert all(r[3]["query"]["token"] in ("it", "capital") for r in ok)
    assert len(ok) >= 20  # the queue drains: a fair share is served, not everything refused
    with httpx.Client(base_url=server.url, timeout=30) as c:
        health = c.get("/api/health").json()
    assert health["in_flight"] == 0 and health["refused"] == len(busy)
    assert rss_after - rss_before < 300, (rss_before, rss_after)  # bounded: no per-request growth

    lat_ok = [r[1] * 1000 for r in ok]
    lat_all = [r[1] * 1000 for r in results]
    print(
        f"\nload: {len(results)} requests, {CLIENTS} clients, {wall:.1f} s wall; {len(ok)} x 200, {len(busy)} x 503; "
        f"latency ms all p50 {percentile(lat_all, 0.5):.0f} p95 {percentile(lat_all, 0.95):.0f}; "
        f"200s p50 {percentile(lat_ok, 0.5):.0f} p95 {percentile(lat_ok, 0.95):.0f} "
        f"(mean {statistics.mean(lat_ok):.0f}); RSS {rss_before:.0f} -> {rss_after:.0f} MiB"
    )


def ask_until_answered(c: httpx.Client, body: dict, limit_s: float = 120) -> tuple[int, int]:
    """POST ``body`` until it is not 503, sleeping what ``Retry-After`` asks in between: (status, 503s seen)."""
    busy, deadline = 0, time.monotonic() + limit_s
    while True:
        r = c.post("/api/trace", json=body)
        if r.status_code != 503 or time.monotonic() > deadline:
            return r.status_code, busy
        busy += 1
        time.sleep(float(r.headers["retry-after"]))


def test_twenty_clients_honouring_retry_after_all_get_their_answer(server):
    clients, per_client = 20, 10
    codes, busy, errors = [], [], []
    lock = threading.Lock()

    def client(k: int):
        with httpx.Client(base_url=server.url, timeout=60) as c:
            for n in range(per_client):
                body = {"text": TEXTS[(k + n) % len(TEXTS)], "include_trace": n % 5 == 0}
                try:
                    code, waits = ask_until_answered(c, body)
                except httpx.HTTPError as e:
                    with lock:
                        errors.append(repr(e))
                    continue
                with lock:
                    codes.append(code)
                    busy.append(waits)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(240)
    wall = time.perf_counter() - start
    assert errors == [] and codes == [200] * (clients * per_client), (errors, sorted(set(codes)))
    assert sum(busy) > 0  # the queue did fill: the 200s above include retried requests
    print(f"\nretrying clients: {clients * per_client} requests all 200 in {wall:.1f} s; {sum(busy)} x 503 retried")


def post_oversized(url: str, size: int, chunked: bool, pause: float = 0.3) -> str:
    """Send a ``size``-byte body in two parts (64 KiB, a pause, the rest) over a raw socket, as a client on a
    slow link would, and return the answer's status line -- or how the connection failed."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=60)
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}"
    head = f"POST /api/trace HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n{framing}\r\n\r\n"
    body = b'{"text": "' + b"x" * (size - 12) + b'"}'
    parts = [body[:65536], body[65536:]]
    if chunked:
        parts = [b"%x\r\n%s\r\n" % (len(p), p) for p in parts]
        parts[-1] += b"0\r\n\r\n"
    try:
        sock.sendall(head.encode() + parts[0])
        time.sleep(pause)  # the old server had answered 413 and closed by now
        sock.sendall(parts[1])
        answer = b""
        while b"\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                return f"closed without an answer after {len(answer)} bytes"
            answer += chunk
        return answer.split(b"\r\n", 1)[0].decode()
    except OSError as e:
        return f"{type(e).__name__}: {e}"
    finally:
        sock.close()


def test_oversized_bodies_get_413_also_while_the_server_is_busy(server):
    stop = threading.Event()

    def keep_busy():  # more traces than slots + queue: the server answers 200s and 503s the whole time
        with httpx.Client(base_url=server.url, timeout=60) as c:
            while not stop.is_set():
                c.post("/api/trace", json={"text": TEXTS[0], "include_trace": True})

    loaders = [threading.Thread(target=keep_busy) for _ in range(14)]
    for t in loaders:
        t.start()
    try:
        time.sleep(0.5)
        with httpx.Client(base_url=server.url, timeout=30) as c:
            assert c.get("/api/health").json()["in_flight"] >= 2  # busy indeed
        answers = [post_oversized(server.url, 2_000_000, chunked=k % 2 == 1) for k in range(12)]
    finally:
        stop.set()
        for t in loaders:
            t.join(60)
    assert answers == ["HTTP/1.1 413 Request Entity Too Large"] * 12, answers
