"""Run the app: bind first (fail fast on a taken port), load the model once with progress, serve until Ctrl-C.

uvicorn handles SIGINT/SIGTERM: it stops accepting, lets running requests finish, then re-raises the signal;
:func:`serve` takes that as the end it asked for and returns 0 after saying so.
"""

from __future__ import annotations

import errno
import signal
import socket
import sys
import time
from typing import Callable

from .limits import Limits

__all__ = ["serve", "bind", "is_loopback"]


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    return host in ("localhost", "::1") or host.startswith("127.")


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: any free one), or ValueError saying what to change."""
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be 0..65535, got {port}")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise ValueError(f"cannot resolve host {host!r} ({e.strerror}); use e.g. 127.0.0.1") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise ValueError(
                f"port {port} on {host} is already in use; stop what uses it or pick another port with --port"
            ) from None
        raise ValueError(f"cannot listen on {host}:{port} ({e.strerror}); pick another --host or --port") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def serve(
    model: str = "minilm",
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    limits: Limits | None = None,
    say: Callable[[str], None] | None = None,
    status=None,
) -> int:
    """Serve ``model`` on ``host:port`` until interrupted; returns 0.

    Args:
        model: a model name or checkpoint directory (loaded once, before the first request; a family qkv does
            not re-implement loads through :mod:`qkv.hf`, as :func:`qkv.lens.trace.load_model` does).
        host, port: where to listen; anything but a loopback address is announced with a loud warning.
        limits: :class:`qkv.serve.limits.Limits`.
        say: prints a line for the user (default: stderr).
        status: a context manager factory ``status(text)`` showing progress while the model loads.
    """
    import uvicorn

    from ..lens.loading import load_model, model_info
    from ..lens.tracing import trace
    from .app import create_app

    say = say or (lambda line: print(line, file=sys.stderr, flush=True))
    limits = limits or Limits()
    sock = bind(host, port)  # before the model loads: a taken port fails in milliseconds
    try:
        port = sock.getsockname()[1]
        if not is_loopback(host):
            say(
                f"WARNING: listening on {host}:{port} -- every machine that can reach this one can use the app and "
                f"its CPU. qkv serve has no authentication; use --host 127.0.0.1 unless you mean it."
            )
        start = time.perf_counter()
        say(f"qkv serve: loading {model} ...")
        if status is not None:
            with status(f"Loading {model} ..."):
                m = load_model(model)
                trace("warm up", m)
        else:
            m = load_model(model)
            trace("warm up", m)
        info = model_info(m, model)
        say(
            f"loaded {info['name']} ({info['num_layers']} layers x {info['num_heads']} heads, "
            f"head_dim {info['head_dim']}) in {time.perf_counter() - start:.1f} s"
        )
        app = create_app(m, limits=limits, host=host)
        shown = f"[{host}]" if ":" in host else host
        say(
            f"qkv serve: open http://{'127.0.0.1' if host in ('0.0.0.0', '::') else shown}:{port}/ "
            f"(API schema at /openapi.json; Ctrl-C stops)"
        )
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            limit_concurrency=limits.running + limits.waiting + 64,
            timeout_graceful_shutdown=10,
            server_header=False,
        )
        _run_until_stopped(uvicorn.Server(config), sock)
    finally:
        sock.close()
    say("qkv serve: stopped")
    return 0


def _run_until_stopped(server, sock: socket.socket) -> None:
    """``server.run`` until Ctrl-C or SIGTERM, both taken as a clean stop (uvicorn re-raises them after its
    graceful shutdown; SIGTERM's default action would kill the process without a word)."""

    def stop(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
