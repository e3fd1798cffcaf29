"""Limits: the bounded trace queue answers 503 + Retry-After (never a crash), and the `qkv serve` command's errors."""

import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from qkv.cli import main
from qkv.serve.limits import Limits

from .conftest import SENTENCE


def test_full_queue_gets_503_with_retry_after_and_nothing_is_lost(minilm):
    from fastapi.testclient import TestClient

    import qkv
    from qkv.serve.app import create_app

    started = threading.Semaphore(0)
    release = threading.Event()

    def slow(text, model):  # holds its slot until released, so the queue fills deterministically
        started.release()
        release.wait(20)
        return qkv.trace(text, model)

    app = create_app(minilm, limits=Limits(running=1, waiting=2, retry_after=3), tracer=slow)
    results = []
    with TestClient(app, base_url="http://127.0.0.1") as c:

        def ask():
            r = c.post("/api/trace", json={"text": SENTENCE, "query": "it"})
            results.append((r.status_code, r.headers.get("retry-after"), r.json()))

        first = [threading.Thread(target=ask) for _ in range(3)]  # 1 running + 2 waiting
        for t in first:
            t.start()
        assert started.acquire(timeout=20)  # the first one is inside the tracer
        deadline = time.monotonic() + 20
        while c.get("/api/health").json()["in_flight"] < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        more = [threading.Thread(target=ask) for _ in range(4)]  # no room: 503 at once
        for t in more:
            t.start()
        for t in more:
            t.join(20)
        busy = [r for r in results if r[0] == 503]
        assert len(busy) == 4 and all(r[1] == "3" for r in busy)
        assert all("the server is busy: 3 traces are running or waiting; retry in 3 s" == r[2]["error"] for r in busy)
        release.set()
        for t in first:
            t.join(30)
        for _ in range(2):
            started.acquire(timeout=20)
        health = c.get("/api/health").json()
    assert sorted(r[0] for r in results) == [200, 200, 200, 503, 503, 503, 503]
    assert health["in_flight"] == 0 and health["refused"] == 4


@pytest.mark.parametrize(
    "field, value", [("max_chars", 0), ("running", 0), ("waiting", -1), ("max_body", 0), ("max_items", 0)]
)
def test_limits_refuse_nonsense(field, value):
    with pytest.raises(ValueError, match=f"Limits.{field} must be"):
        Limits(**{field: value})


def test_serve_without_the_extra_says_how_to_install(monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "fastapi" else real(name, *a))
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("qkv serve: error: ") and "pip install 'qkv[serve]'" in err and "fastapi" in err


def test_serve_refuses_a_taken_port_before_loading(capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        t0 = time.perf_counter()
        assert main(["serve", "--port", str(port)]) == 2
        assert time.perf_counter() - t0 < 5  # no model was loaded
    err = capsys.readouterr().err
    assert f"qkv serve: error: port {port} on 127.0.0.1 is already in use" in err and "--port" in err


@pytest.mark.parametrize(
    "args, words",
    [
        (["--port", "70000"], "port must be 0..65535, got 70000"),
        (["--workers", "0"], "--workers must be at least 1"),
        (["--queue", "-1"], "--queue must be at least 0"),
        (["--max-items", "0"], "--max-items must be at least 1"),
        (["--host", "no-such-host.invalid"], "cannot resolve host"),
    ],
)
def test_serve_bad_options(capsys, args, words):
    assert main(["serve", *args]) == 2
    assert words in capsys.readouterr().err


def test_import_qkv_never_imports_the_web_stack():
    code = (
        "import sys, qkv, qkv.cli, qkv.lens.trace, qkv.view, qkv.serve, qkv.serve.limits; "
        "bad = [m for m in ('fastapi', 'starlette', 'uvicorn', 'pydantic') if m in sys.modules]; "
        "assert not bad, bad; qkv.cli.build_parser().parse_args(['serve']); "
        "assert 'fastapi' not in sys.modules"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=os.environ)
    assert r.returncode == 0, r.stderr


def test_library_never_imports_serve():
    import pathlib
    import re

    import qkv

    root = pathlib.Path(qkv.__file__).parent
    for path in root.rglob("*.py"):
        if {"serve", "cli"} & set(path.relative_to(root).parts):  # the serve package and the CLI layer above it
            continue
        assert not re.search(r"(from|import)\s+(\.+|qkv\.)serve", path.read_text()), path


def test_a_public_host_is_announced_loudly(monkeypatch, minilm):
    """--host 0.0.0.0 warns (the socket is bound to loopback here: tests never listen beyond 127.0.0.1)."""
    import uvicorn

    import qkv.models
    from qkv.serve import server

    seen = {}
    monkeypatch.setattr(server, "bind", lambda host, port: server.socket.create_server(("127.0.0.1", 0)))
    monkeypatch.setattr(qkv.models, "load", lambda name: minilm)
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets: seen.setdefault("app", self.config.app))
    lines = []
    assert server.serve("minilm", "0.0.0.0", 8000, say=lines.append) == 0
    assert lines[0].startswith("WARNING: listening on 0.0.0.0:") and "no authentication" in lines[0]
    assert any("open http://127.0.0.1:" in line for line in lines) and lines[-1] == "qkv serve: stopped"
    lines.clear()
    assert server.serve("minilm", "127.0.0.1", 8000, say=lines.append) == 0
    assert not any("WARNING" in line for line in lines)
    assert server.is_loopback("127.0.0.1") and server.is_loopback("::1") and not server.is_loopback("0.0.0.0")
