"""Ring attention on 2 and 4 spawned gloo processes (127.0.0.1) against single-process qkv.attention.

Each spawn costs seconds on a 2-core machine, so one spawned job runs every mask case and returns
max differences (see ring_jobs.py); the assertions happen here. Oracle: ``qkv.attention(impl="reference")``
on the whole sequence in float64; tolerance 1e-10 (the observed error is ~1e-15).
"""

import math
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # spawned children import ring_jobs by name
import ring_jobs  # noqa: E402

from qkv.distributed import launch  # noqa: E402

TOL = 1e-10
QUANTITIES = ("out", "lse", "gathered_out", "dq", "dk", "dv")


def _assert_all_close(results, impls):
    names = set(ring_jobs.cases())
    for rank, res in enumerate(results):
        assert {name for _, name in res} == names
        for (impl, name), errs in res.items():
            assert impl in impls
            for q in QUANTITIES:
                assert errs[q] <= TOL, f"rank {rank} impl={impl} case {name}: max |{q} - reference| = {errs[q]}"
    # the cases with fully masked query rows really have them (else the no-NaN check proves nothing)
    assert results[0][(impls[0], "causal_bottom_right_empty_rows")]["empty_rows"] > 0
    assert results[0][(impls[0], "padding_empty_rows")]["empty_rows"] > 0


def test_two_processes_match_single_process_for_every_mask():
    impls = ("reference", "auto")
    results = launch.spawn(ring_jobs.compare_all, 2, args=(impls,), timeout=240, pg_timeout=60)
    _assert_all_close(results, impls)


@pytest.mark.slow
def test_four_processes_match_single_process_for_every_mask():
    impls = ("auto",)
    results = launch.spawn(ring_jobs.compare_all, 4, args=(impls,), timeout=300, pg_timeout=60)
    _assert_all_close(results, impls)


def test_ranks_that_disagree_on_shapes_get_a_value_error_and_spawn_reports_it():
    with pytest.raises(launch.SpawnError, match="rank 1 error") as info:
        launch.spawn(ring_jobs.bad_shapes, 2, timeout=120, grace=10)
    rank0 = info.value.results[0]
    assert "ranks disagree on D: [8, 16]" in rank0  # a clear message on rank 0 ...
    assert "ValueError: " + rank0 in str(info.value)  # ... the same one on rank 1, traceback reported


def test_a_trainable_score_mod_is_declined_with_a_reason_and_runs_without_grad():
    results = launch.spawn(ring_jobs.trainable_mod_is_declined, 2, timeout=120, pg_timeout=60)
    for res in results:
        msg, err = res.rsplit("|", 1)
        assert "cannot pass gradients to tensors the score mod" in msg and "detach them" in msg
        assert float(err) < 1e-12


def test_a_rank_that_dies_gives_a_clear_error_on_the_others():
    start = time.monotonic()
    results = launch.spawn(
        ring_jobs.rank_dies_before_backward,
        3,
        args=(2, 20.0),
        timeout=120,
        pg_timeout=60,
        grace=10,
        return_failures=True,
    )
    total = time.monotonic() - start
    dead = results[2]
    assert isinstance(dead, launch.Failure) and dead.kind == "died" and "code 7" in dead.message
    for survivor in results[:2]:
        assert survivor["error"] == "RingError", survivor
        assert "ring_attention backward: rank" in survivor["message"]
        assert "died" in survivor["message"]
        assert survivor["elapsed"] < 20.0  # liveness bound (the per-wait timeout), not a speed claim
    assert total < 120


def test_a_rank_that_hangs_times_out_on_the_others():
    start = time.monotonic()
    timeout = 3.0
    results = launch.spawn(
        ring_jobs.rank_hangs, 2, args=(1, timeout), timeout=150, pg_timeout=60, grace=2, return_failures=True
    )
    total = time.monotonic() - start
    survivor, hung = results
    assert isinstance(survivor, launch.Failure) and survivor.kind == "error"
    assert "RingError: ring_attention: rank 0 of 2" in survivor.message and "timed out" in survivor.message
    elapsed = float(re.search(r"raised after ([0-9.]+) s", survivor.message).group(1))
    assert timeout * 0.9 <= elapsed < timeout + 30  # raised at the timeout (a liveness bound), never a hang
    assert isinstance(hung, launch.Failure) and hung.kind == "timeout"  # the sleeper was killed, not waited for
    assert total < 150


@pytest.mark.slow
def test_demo_runs_and_reports_tiny_differences():
    cmd = [
        sys.executable,
        "-m",
        "qkv.distributed.demo",
        "--world-size",
        "2",
        "--length",
        "300",
        "--heads",
        "2",
        "--head-dim",
        "16",
        "--dtype",
        "float64",
        "--backward",
        "--timeout",
        "240",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    diffs = {}
    for line in proc.stdout.splitlines():
        if line.strip().startswith("max |"):
            name = line.split("|")[1].split()[0]
            diffs[name] = float(line.rsplit("=", 1)[1])
    assert set(diffs) == {"out", "lse", "dq", "dk", "dv"}, proc.stdout
    assert all(math.isfinite(d) and d < 1e-10 for d in diffs.values()), proc.stdout
