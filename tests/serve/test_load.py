"""A bounded load test on loopback: 240 requests from 24 concurrent clients against a real `qkv serve`.

Every request must be answered (200, or 503 with Retry-After when the queue is full), none lost or 5xx
otherwise; the server's memory must stay bounded. Latencies (p50/p95) are printed (``pytest -s``).
"""

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
