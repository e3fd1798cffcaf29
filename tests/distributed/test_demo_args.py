"""The ring demo rejects bad arguments the argparse way (one ``error:`` line, status 2, no traceback) and
reports a failed run in one line (status 1) -- issue 11."""

import pytest

from qkv.distributed import demo, launch

PROG = "python -m qkv.distributed.demo: error: "


@pytest.mark.parametrize(
    "args, says",
    [
        (["--world-size", "0"], "--world-size must be at least 1, got 0"),
        (["--world-size", "1000"], "--world-size 1000 starts that many local processes; use at most 64"),
        (["--length", "0"], "--length must be at least 1, got 0"),
        (["--batch", "-1"], "--batch must be at least 1, got -1"),
        (["--heads", "0"], "--heads must be at least 1, got 0"),
        (["--head-dim", "0"], "--head-dim must be at least 1, got 0"),
        (["--heads", "3", "--kv-heads", "2"], "--kv-heads 2 must divide --heads 3"),
        (["--kv-heads", "0"], "--kv-heads 0 must divide --heads 4"),
        (["--timeout", "-1"], "--timeout must be a positive number of seconds, got -1.0"),
        (["--timeout", "nan"], "--timeout must be a positive number of seconds, got nan"),
        (["--impl", "nonsense"], "--impl 'nonsense' is unknown; choose auto or one of "),
        (["--mask", "blah"], "--mask: unknown mask 'blah'; use full, causal, causal_top_left, sliding_window:W"),
        (["--mask", "sliding_window:x"], "--mask: sliding_window:x needs a positive integer after the colon"),
        (["--mask", "document:0"], "--mask: document:0 needs a positive integer after the colon, e.g. document:1000"),
        (["--mask", "sliding_window:-3"], "--mask: sliding_window:-3 needs a positive integer"),
        (["--length", "ten"], "argument --length: invalid int value: 'ten'"),
        (["--dtype", "float16"], "argument --dtype: invalid choice: 'float16'"),
    ],
)
def test_bad_arguments_exit_2_with_one_error_line(args, says, capsys, monkeypatch):
    monkeypatch.setattr(launch, "spawn", lambda *a, **k: pytest.fail("must not start processes"))
    with pytest.raises(SystemExit) as e:
        demo.main(args)
    assert e.value.code == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith(PROG) and says in last, err
    assert "Traceback" not in err


def test_a_failed_run_is_one_line_with_status_1(capsys, monkeypatch):
    def spawn(*a, **k):
        tb = (
            "Traceback (most recent call last):\n  File ...\nValueError: ring_attention: the ranks disagree on the mask"
        )
        raise launch.SpawnError([launch.Failure(0, "error", tb), launch.Failure(1, "timeout", "did not finish")], [])

    monkeypatch.setattr(launch, "spawn", spawn)
    assert demo.main(["--world-size", "2", "--length", "16"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(PROG + "the ring run failed: rank 0 error: ValueError: ring_attention: the ranks disagree")
    assert "; rank 1 timeout: did not finish" in err


def test_make_mask_rejects_bad_sizes_in_python_too():
    with pytest.raises(ValueError, match=r"document:x needs a positive integer after the colon"):
        demo.make_mask("document:x", 10)
    assert demo.make_mask("sliding_window", 10) is not None and demo.make_mask("full", 10) is None
