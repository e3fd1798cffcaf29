"""Fixtures for qkv serve: the app in-process (FastAPI's TestClient) and the real server in a subprocess."""

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

pytest.importorskip("fastapi", reason="qkv serve needs the serve extra: pip install 'qkv[serve]'")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx")

SENTENCE = "The cat sat on the mat because it was tired."
XSS = 'The cat </script><script>window.__pwned = 1</script> sat on <img src=x onerror="window.__pwned = 2"> it.'


@pytest.fixture(scope="session")
def minilm():
    import qkv.models

    return qkv.models.load("minilm")


@pytest.fixture(scope="session")
def client(minilm):
    from fastapi.testclient import TestClient

    from qkv.serve.app import create_app

    with TestClient(create_app(minilm), base_url="http://127.0.0.1") as c:
        yield c


class Served:
    """A ``qkv serve --port 0`` subprocess: ``url``, ``pid``, ``lines`` (its stderr so far), ``stop()``."""

    def __init__(self, *args: str, timeout: float = 120):
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "NO_COLOR": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "qkv.cli", "serve", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.pid = self.proc.pid
        self.lines: list[str] = []
        self._q: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + timeout
        self.url = None
        while self.url is None:
            try:
                line = self._q.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                self.proc.kill()
                raise RuntimeError(f"qkv serve did not start in {timeout} s: {self.lines}") from None
            if line is None:
                raise RuntimeError(f"qkv serve exited with {self.proc.wait()}: {self.lines}")
            m = re.search(r"open (http://127\.0\.0\.1:\d+)/", line)
            if m:
                self.url = m.group(1)

    def _read(self):
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            self._q.put(line)
        self._q.put(None)

    def rss_mb(self) -> float:
        """Resident memory of the server process (Linux /proc), MiB."""
        with open(f"/proc/{self.pid}/status") as f:
            kb = next(int(x.split()[1]) for x in f if x.startswith("VmRSS:"))
        return kb / 1024

    def stop(self) -> int:
        """Ctrl-C (SIGINT) and wait: the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise
        time.sleep(0.1)  # let the reader thread take the last lines
        return self.proc.returncode


@pytest.fixture(scope="module")
def served():
    s = Served()
    yield s
    rc = s.stop()
    assert rc == 0, s.lines
    assert "qkv serve: stopped" in s.lines, s.lines
