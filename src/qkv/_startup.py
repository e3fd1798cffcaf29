"""Ctrl-C while the ``qkv`` command's imports load torch: one line, status 130, never a C++ abort.

A ``KeyboardInterrupt`` raised while torch's import code is inside C++ that called back into Python can end the
process with ``terminate called ...`` -- no ``except`` can catch that. So while the *command* imports qkv
(its console script, ``python -m qkv`` or ``python -m qkv.cli``), SIGINT only records that it came; when the imports
are done the command stops with ``qkv: interrupted`` and status 130. Imported as a library, nothing changes.
Standard library only: this runs before torch is imported.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager
from typing import Iterator

__all__ = ["is_the_command", "command_imports"]


def is_the_command() -> bool:
    """This process is the ``qkv`` command: its console script, ``python -m qkv`` or ``python -m qkv.cli``."""
    argv = getattr(sys, "orig_argv", sys.argv)
    if os.path.basename(sys.argv[0]) in ("qkv", "qkv.exe"):
        return True
    return "-m" in argv[:-1] and argv[argv.index("-m") + 1] in ("qkv", "qkv.cli")


@contextmanager
def command_imports() -> Iterator[None]:
    """Defer SIGINT over the ``with`` block when this process is the ``qkv`` command (main thread only)."""
    if not is_the_command() or threading.current_thread() is not threading.main_thread():
        yield
        return
    came: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: came.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if came:
        print("qkv: interrupted", file=sys.stderr, flush=True)
        raise SystemExit(130)
