"""Run a function on ``W`` local processes joined by a process group -- bounded in time, cleaned up.

The backend follows the device the ranks compute on (:func:`backend_for`): gloo for CPU tensors, NCCL for CUDA
tensors (one GPU per rank: rank ``r`` uses ``cuda:r``).

:func:`spawn` starts ``W`` processes with ``torch.multiprocessing`` (``spawn`` start method), joins them
through a ``TCPStore`` that the parent opens on ``127.0.0.1`` with a free port chosen by the kernel
(port 0: no race for a guessed port), gives the process group a timeout, and returns every rank's
result. A rank that raises, dies or outlives its deadline is reported; once one rank has failed
the others get ``grace`` seconds, then stragglers are killed. Only loopback addresses are used.

The function must be importable by the children (defined at module level) and its result
picklable; it is called as ``fn(rank, world_size, *args)`` after ``init_process_group``.

Example (spawns processes, so not a doctest)::

    from qkv.distributed import launch
    def hello(rank, world):
        return rank * 10
    launch.spawn(hello, 2)   # -> [0, 10]
"""

from __future__ import annotations

import os
import pickle
import queue as _queue
import socket
import time
import traceback
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

__all__ = ["spawn", "Failure", "SpawnError", "loopback_interface", "backend_for"]


def backend_for(device) -> str:
    """The process-group backend for tensors on ``device``: ``"nccl"`` for CUDA, ``"gloo"`` otherwise.

    Example:
        >>> backend_for("cpu"), backend_for("cuda:0")
        ('gloo', 'nccl')
    """
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


@dataclass(frozen=True)
class Failure:
    """What went wrong on one rank: ``kind`` is ``"error"`` (it raised), ``"died"`` or ``"timeout"``."""

    rank: int
    kind: str
    message: str

    def __str__(self) -> str:
        return f"rank {self.rank} {self.kind}: {self.message}"


class SpawnError(RuntimeError):
    """One or more ranks failed; ``failures`` lists them, ``results`` holds what the others returned."""

    def __init__(self, failures: list[Failure], results: list):
        self.failures, self.results = failures, results
        super().__init__("; ".join(str(f) for f in failures))


def loopback_interface() -> str | None:
    """Name of the loopback network interface (``lo`` on Linux, ``lo0`` on macOS), or None."""
    try:
        names = [name for _, name in socket.if_nameindex()]
    except OSError:  # pragma: no cover - platform without if_nameindex
        return None
    return next((n for n in names if n in ("lo", "lo0")), next((n for n in names if n.startswith("lo")), None))


def _child(rank, world_size, port, fn, args, pg_timeout, backend, threads, results):
    status, payload = "error", None
    try:
        iface = loopback_interface()
        if iface and backend == "gloo":
            os.environ.setdefault("GLOO_SOCKET_IFNAME", iface)  # gloo talks over loopback only
        if threads:
            torch.set_num_threads(threads)
        if backend == "nccl":  # one GPU per rank
            torch.cuda.set_device(rank % max(torch.cuda.device_count(), 1))
        store = dist.TCPStore("127.0.0.1", port, world_size, is_master=False, timeout=timedelta(seconds=pg_timeout))
        dist.init_process_group(
            backend, store=store, rank=rank, world_size=world_size, timeout=timedelta(seconds=pg_timeout)
        )
        payload = pickle.dumps(fn(rank, world_size, *args))
        status = "ok"
    except BaseException:  # report everything, including KeyboardInterrupt, to the parent
        payload = traceback.format_exc()
    # Report before tearing down: with a dead or hung peer, destroying the group can block until its
    # timeout, so after a failure the group is left to the operating system (the parent kills stragglers).
    results.put((rank, status, payload))
    if status == "ok" and dist.is_initialized():
        dist.destroy_process_group()


def spawn(
    fn,
    world_size: int,
    args: tuple = (),
    *,
    timeout: float = 120.0,
    pg_timeout: float = 30.0,
    grace: float = 10.0,
    backend: str | None = None,
    device="cpu",
    threads: int | None = None,
    return_failures: bool = False,
) -> list:
    """Run ``fn(rank, world_size, *args)`` on ``world_size`` fresh processes; return the results by rank.

    Args:
        fn: a module-level function (the children import it).
        world_size: number of processes ``W``.
        args: extra picklable arguments.
        timeout: wall-clock bound for the whole run (seconds); ranks still running are killed.
        pg_timeout: timeout of the process group (bounds every collective / point-to-point wait).
        grace: once a rank has failed, seconds the others get to finish before they are killed.
        backend: ``"gloo"`` (CPU) or ``"nccl"`` (one GPU per rank); default :func:`backend_for` ``(device)``.
        device: where ``fn`` computes (``"cpu"`` or ``"cuda"``): chooses the default backend.
        threads: ``torch.set_num_threads`` in each child (default: CPU cores // W, at least 1).
        return_failures: put :class:`Failure` objects in the result list instead of raising.

    Raises:
        SpawnError: a rank raised, died or timed out (unless ``return_failures``).
    """
    if not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be a positive int, got {world_size!r}")
    threads = threads or max(1, (os.cpu_count() or 1) // world_size)
    backend = backend or backend_for(device)
    master = dist.TCPStore(
        "127.0.0.1", 0, world_size + 1, is_master=True, wait_for_workers=False, timeout=timedelta(seconds=pg_timeout)
    )
    ctx = mp.get_context("spawn")
    results_q = ctx.Queue()
    procs = [
        ctx.Process(
            target=_child,
            daemon=True,
            name=f"qkv-rank-{r}",
            args=(r, world_size, master.port, fn, args, pg_timeout, backend, threads, results_q),
        )
        for r in range(world_size)
    ]
    for p in procs:
        p.start()
    results: dict[int, object] = {}
    failures: dict[int, Failure] = {}
    deadline = time.monotonic() + timeout
    exited_at: dict[int, float] = {}
    try:
        while len(results) + len(failures) < world_size:
            now = time.monotonic()
            if now >= deadline:
                for r in range(world_size):
                    if r not in results and r not in failures:
                        failures[r] = Failure(
                            r,
                            "timeout",
                            f"did not finish within the deadline ({timeout:g} s "
                            f"total, {grace:g} s after another rank failed)",
                        )
                break
            try:
                rank, status, payload = results_q.get(timeout=0.1)
            except _queue.Empty:
                for r, p in enumerate(procs):  # dead without a report (killed, os._exit, segfault)?
                    if r in results or r in failures or p.is_alive():
                        continue
                    exited_at.setdefault(r, now)
                    if now - exited_at[r] > 1.0:  # give its queue feeder a moment to flush
                        failures[r] = Failure(r, "died", f"exited with code {p.exitcode} without a result")
                        deadline = min(deadline, now + grace)
                continue
            if status == "ok":
                results[rank] = pickle.loads(payload)
            else:
                failures[rank] = Failure(rank, "error", payload)
                deadline = min(deadline, time.monotonic() + grace)
    finally:
        stop = min(time.monotonic() + 5.0, deadline)  # one shared budget for the exits, then kill
        for p in procs:
            p.join(timeout=max(0.0, stop - time.monotonic()))
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(timeout=5.0)
        results_q.close()
        del master
    out = [results.get(r, failures.get(r)) for r in range(world_size)]
    if failures and not return_failures:
        raise SpawnError([failures[r] for r in sorted(failures)], out)
    return out
