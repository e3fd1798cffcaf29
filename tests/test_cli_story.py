"""One story for one token, sizes checked before work, Ctrl-C at any moment, and texts that explain themselves.

The same pronoun named as "it", "It", "it@1" or 8 opens on the same head and the essay's cat/mat pair, in the
command, its JSON and its HTML page (the web app's side is tests/serve/test_api.py::test_one_story_for_one_token).
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from qkv.cli import build_parser, main
from qkv.lens.essay import ESSAY_SENTENCE

SOFT = "The cat sat on the mat because it was soft."


@pytest.fixture(scope="module")
def essay_doc(tmp_path_factory):
    path = tmp_path_factory.mktemp("story") / "it.json"
    assert main(["explain", "--query", "it", "--json", str(path)]) == 0
    return json.loads(path.read_text())


@pytest.mark.parametrize("query", [None, "It", "IT", "it@1", "8", "-5"])
def test_every_name_of_the_pronoun_tells_the_same_story(query, essay_doc, tmp_path, capsys):
    path = tmp_path / "q.json"
    argv = ["explain", "--json", str(path), "--html", str(tmp_path / "q.html")]
    assert main(argv + ([] if query is None else ["--query", query])) == 0
    doc = json.loads(path.read_text())
    assert doc["query"] == {"index": 8, "token": "it"} and (doc["prefer"], doc["over"]) == ("cat", "mat")
    assert doc["breakdown"]["layer"] == essay_doc["breakdown"]["layer"] == 5
    assert doc["breakdown"]["head"] == essay_doc["breakdown"]["head"] == 11
    assert doc["summary"] == essay_doc["summary"]
    out = capsys.readouterr().out
    assert "Step by step: 'it' in layer 5 head 11" in out and "'it' -> 'cat' vs 'mat'" in out
    from qkv.view.html import extract_json

    initial = extract_json((tmp_path / "q.html").read_text())["initial"]
    assert (initial["query"], initial["layer"], initial["head"]) == (8, 5, 11)


def test_another_query_on_the_essay_has_no_default_pair(tmp_path):
    path = tmp_path / "cat.json"
    assert main(["explain", "--query", "cat", "--json", str(path)]) == 0
    doc = json.loads(path.read_text())
    assert doc["query"]["token"] == "cat" and doc["prefer"] is None and doc["caveat"] is None


def test_a_word_split_into_pieces_gets_a_hint(capsys):
    text = "The chrysanthemums wilted because it rained."
    assert main(["explain", text, "--query", "chrysanthemums"]) == 2
    err = capsys.readouterr().err
    assert "token 'chrysanthemums' is not one token: the model reads it as 5 pieces" in err
    assert "name one piece (e.g. 'ch') or an index (e.g. 2)" in err
    assert main(["explain", text, "--query", "ch", "--top", "1"]) == 0


def test_html_size_is_refused_before_tracing_or_printing(monkeypatch, capsys):
    """The page limit is checked on the token count: nothing is traced or printed before the refusal."""
    import qkv.lens.trace

    traced = []
    monkeypatch.setattr("qkv.view.html.MAX_NUMBERS", 1000)
    real = qkv.lens.trace.trace
    monkeypatch.setattr(qkv.lens.trace, "trace", lambda *a, **k: traced.append(1) or real(*a, **k))
    long = " ".join(["word"] * 900)
    assert main(["explain", long, "--query", "word", "--truncate", "--html", "big.html"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and traced == []
    assert "the HTML view embeds" in err and "for 512 tokens" in err and "use --json or --png" in err


def test_heads_and_compare_help_describe_their_measures_only():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices
    for name in ("heads", "compare"):
        measure = next(a for a in sub[name]._actions if a.dest == "measure")
        assert measure.choices == ("weights", "values")
        assert "rollout" not in measure.help and "weights:" in measure.help and "values:" in measure.help
    explain = next(a for a in sub["explain"]._actions if a.dest == "measure")
    assert "rollout" in explain.choices and "rollout:" in explain.help


def test_compare_says_what_a_flip_is_and_counts_the_clear_ones(tmp_path, capsys):
    path = tmp_path / "c.json"
    assert main(["compare", ESSAY_SENTENCE, SOFT, "--prefer", "cat", "--over", "mat", "--json", str(path)]) == 0
    doc = json.loads(path.read_text())
    flipped = [h for h in doc["heads"] if h["flipped"]]
    clear = [h for h in flipped if min(abs(h["diff_a"]), abs(h["diff_b"])) >= 0.05]
    assert [h["clear"] for h in doc["heads"]] == [h in clear for h in doc["heads"]]
    assert doc["query"] == "it"
    out = " ".join(capsys.readouterr().out.split())
    assert "A switch is any change of sign;" in out
    assert f"{len(clear)} of the {len(flipped)} switch by at least 0.05 on both sides" in out
    assert "the margin qkv claims counts as a preference" in out
    if len(clear) < len(flipped):
        assert "(by < 0.05)" in out  # the table marks the small flips


# ---------------------------------------------------------------------------------------------- serve --device
def test_serve_device_refuses_what_is_not_there(capsys):
    assert main(["serve", "--device", "potato"]) == 2
    assert "--device: 'potato' is not a torch device" in capsys.readouterr().err
    import torch

    if not torch.cuda.is_available():
        assert main(["serve", "--device", "cuda"]) == 2
        assert "this machine has no CUDA device; drop --device" in capsys.readouterr().err


def test_serve_device_moves_the_served_model(monkeypatch):
    import torch

    import qkv.serve.server as server
    from qkv.lens.trace import load_model

    device = "cuda" if torch.cuda.is_available() else "cpu"
    seen = {}
    monkeypatch.setattr(server, "serve", lambda model, *a, **k: seen.setdefault("model", load_model(model)) and 0)
    assert main(["serve", "--device", device]) == 0
    assert next(seen["model"].parameters()).device.type == device


# ---------------------------------------------------------------------------------------------- Ctrl-C
def _interrupt_after(delay: float, *args: str) -> subprocess.CompletedProcess | None:
    env = {**os.environ, "COLUMNS": "120", "NO_COLOR": "1"}
    p = subprocess.Popen(
        [sys.executable, "-m", "qkv", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    time.sleep(delay)
    if p.poll() is not None:  # finished first: nothing to interrupt
        p.communicate()
        return None
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


@pytest.mark.parametrize("delay", [0.3, 0.8, 1.5, 3.0, 6.0])
def test_ctrl_c_at_any_moment_is_one_line_and_status_130(delay):
    """From start-up imports (torch) through loading and tracing: one line, status 130, never a traceback.

    Status 130 is what a shell shows both for ``exit(130)`` and for a death by SIGINT (``-2`` here), which Python
    chooses when the signal lands after the last line of Python. A command whose output is complete had finished
    its work first (or a library swallowed the signal while it loaded: numpy's import does, for about 0.1 s).
    """
    r = _interrupt_after(delay, "explain", "--top", "1")
    if r is None:
        pytest.skip(f"the command finished within {delay} s")
    assert "Traceback" not in r.stderr and "KeyboardInterrupt" not in r.stderr, r.stderr[-2000:]
    if r.stdout:  # every line of output comes after the work: the signal arrived when it was done
        assert "'it' -> 'cat' vs 'mat'" in r.stdout and r.returncode in (0, 130, -signal.SIGINT)
        pytest.skip(f"the command had finished its work within {delay} s")
    assert r.returncode in (130, -signal.SIGINT), (r.returncode, r.stderr[-2000:])
    assert r.stderr == "qkv: interrupted\n", r.stderr[-2000:]


def test_an_interrupt_in_process_returns_130_and_leaves_the_signal_handler(monkeypatch, capsys):
    import qkv.cli

    def stop(args, console):
        raise KeyboardInterrupt

    before = signal.getsignal(signal.SIGINT)
    monkeypatch.setitem(qkv.cli.COMMANDS, "claims", qkv.cli.COMMANDS["claims"]._replace(run=stop))
    assert main(["claims"]) == 130
    assert capsys.readouterr().err == "qkv: interrupted\n"
    assert signal.getsignal(signal.SIGINT) is before
