"""The ``qkv`` command end to end on MiniLM: subprocesses for the real entry point, in-process for error cases."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from qkv.cli import COMMANDS, DEFAULT_TEXT, build_parser, main

TIRED = DEFAULT_TEXT
SOFT = "The cat sat on the mat because it was soft."


def qkv_command() -> list[str]:
    script = Path(sys.executable).with_name("qkv")  # the console script declared in pyproject.toml
    return [str(script)] if script.exists() else [sys.executable, "-m", "qkv.cli"]


def run(*args, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "160", "NO_COLOR": "1"}
    return subprocess.run([*qkv_command(), *args], capture_output=True, text=True, timeout=300, env=env, cwd=cwd)


def test_explain_default_end_to_end(tmp_path):
    out = run("explain", "--html", "e.html", "--json", "e.json", "--png", "e.png", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    text = out.stdout
    assert "What 'it' (token 8) attends to, by weights" in text
    assert "Step by step: 'it' in layer" in text
    assert re.search(r"'it' -> 'cat' vs 'mat' \(weights\): .* of 72 heads prefer 'cat'\.", text.replace("\n", " "))
    doc = json.loads((tmp_path / "e.json").read_text())
    assert doc["schema"] == "qkv.cli" and doc["version"] == 1 and doc["command"] == "explain"
    assert doc["query"] == {"index": 8, "token": "it"} and (doc["prefer"], doc["over"]) == ("cat", "mat")
    assert [lay["layer"] for lay in doc["layers"]] == list(range(6))
    assert set(doc["layers"][0]["mean_top"][0]) == {"index", "token", "value"}
    rows = doc["breakdown"]["rows"]
    assert [r["token"] for r in rows] == [t["text"] for t in doc["trace"]["tokens"]]
    assert set(rows[0]) == {"index", "token", "score", "scaled", "weight", "value_norm", "value_share"}
    assert sum(r["weight"] for r in rows) == pytest.approx(1.0, abs=1e-5)
    lay, head = doc["breakdown"]["layer"], doc["breakdown"]["head"]
    w = torch.tensor(doc["trace"]["layers"][lay]["weights"])[head, 8]  # (L,) the breakdown head's row for 'it'
    assert [r["weight"] for r in rows] == pytest.approx(w.tolist(), abs=1e-4)
    # with cat/mat given, the breakdown head is the one that most prefers cat over mat
    diffs = [
        (torch.tensor(L["weights"])[:, 8, 2] - torch.tensor(L["weights"])[:, 8, 6]) for L in doc["trace"]["layers"]
    ]
    best = max(((n, h) for n in range(6) for h in range(12)), key=lambda nh: float(diffs[nh[0]][nh[1]]))
    assert (lay, head) == best
    assert doc["summary"] in text.replace("\n", " ").replace("  ", " ") or doc["summary"][:40] in text
    col = torch.tensor(doc["trace"]["layers"][lay]["weights"])[head, :, 2].mean()  # every token -> 'cat'
    assert (doc["caveat"] is not None) == bool(col >= 0.5 * w[2])
    if doc["caveat"]:
        assert f"gives 'cat' {col:.3f} on average" in doc["caveat"] and "Note: " in text
    page = (tmp_path / "e.html").read_text()
    assert "https://" not in page and "http://" not in page
    assert (tmp_path / "e.png").read_bytes()[:4] == b"\x89PNG"


def test_heads_end_to_end(tmp_path):
    out = run("heads", TIRED, "--query", "it", "--prefer", "cat", "--over", "mat", "--json", "h.json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "Heads ranked by weight('cat') - weight('mat') (72 heads)" in out.stdout
    doc = json.loads((tmp_path / "h.json").read_text())
    assert doc["command"] == "heads" and len(doc["heads"]) == 72
    diffs = [h["diff"] for h in doc["heads"]]
    assert diffs == sorted(diffs, reverse=True)
    top = doc["heads"][0]
    first = next(line for line in out.stdout.splitlines() if re.match(r"│\s+1 │", line))
    assert f"L{top['layer']} H{top['head']} " in first  # rank 1 is the first row


def test_compare_end_to_end(tmp_path):
    out = run(
        "compare", TIRED, SOFT, "--query", "it", "--prefer", "cat", "--over", "mat", "--json", "c.json", cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads((tmp_path / "c.json").read_text())
    assert doc["command"] == "compare" and doc["texts"] == [TIRED, SOFT] and len(doc["heads"]) == 72
    flipped = [h for h in doc["heads"] if h["flipped"]]
    assert all((h["diff_a"] > 0) != (h["diff_b"] > 0) for h in flipped)
    n_to_mat = sum(h["diff_a"] > 0 for h in flipped)
    assert f"{n_to_mat} of 72 heads switch from 'cat' to 'mat'" in out.stdout.replace("\n", " ")
    assert "A: " + TIRED in out.stdout and "B: " + SOFT in out.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["explain", ""], "the text is empty"),
        (["explain", "--query", "dgo", "The dog barked."], "close matches: dog"),
    ],
)
def test_bad_input_subprocess_exits_2_without_traceback(args, message):
    out = run(*args)
    assert out.returncode == 2
    assert message in out.stderr and out.stderr.count("\n") == 1
    assert "Traceback" not in out.stderr + out.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["explain", "--layer", "6"], "layer 6 is out of range; minilm has 6 layers (0..5)"),
        (["explain", "--head", "12"], "head 12 is out of range; minilm has 12 heads (0..11)"),
        (["explain", "word " * 600, "--query", "word"], "at most 512 positions; pass --truncate"),
        (["explain", "The cat sat.", "--query", "it"], "token 'it' is not in the text"),
        (["explain", "--prefer", "cat"], "give both --prefer and --over"),
        (["explain", "--prefer", "cow", "--over", "mat"], "--prefer: token 'cow' is not in the text"),
        (["explain", "--measure", "rollout", "--head", "1"], "rollout combines all heads"),
        (["explain", "--top", "0"], "--top must be at least 1"),
        (["heads", "a cat on a mat", "--query", "cat", "--prefer", "mat", "--over", "mat"], "same token"),
        (
            ["compare", TIRED, "The dog sat.", "--query", "it", "--prefer", "cat", "--over", "mat"],
            "text B: token 'it' is not in the text",
        ),
        (["compare", TIRED, " ", "--prefer", "cat", "--over", "mat"], "text B is empty"),
        (["explain", "--model", "no-such-model"], "no model called 'no-such-model'"),
        (["explain", "--json", "/no/such/dir/x.json"], "--json: the directory of '/no/such/dir/x.json' does not exist"),
        (["explain", "--png", "x.jpg"], "--png wants a path ending in .png"),
        (["heads", TIRED, "--prefer", "cat", "--over", "mat", "--json", "/"], "--json wants a file path"),
    ],
)
def test_bad_input_in_process_exits_2(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith(f"qkv {args[0]}: error: ")


def test_argparse_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["explain", "--measure", "gradients"])
    assert e.value.code == 2 and "invalid choice" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["heads", TIRED, "--prefer", "cat"])
    assert e.value.code == 2 and "--over" in capsys.readouterr().err
    assert main([]) == 2


def test_explain_options_in_process(tmp_path, capsys):
    assert (
        main(["explain", "--measure", "values", "--layer", "3", "--head", "1", "--json", str(tmp_path / "v.json")]) == 0
    )
    out = capsys.readouterr().out
    assert "by values" in out and "Step by step: 'it' in layer 3 head 1" in out
    doc = json.loads((tmp_path / "v.json").read_text())
    assert doc["breakdown"]["layer"] == 3 and doc["breakdown"]["head"] == 1
    assert all(lay["head"] == 1 for lay in doc["layers"])
    assert main(["explain", "A dog chased the ball and it rolled away.", "--query", "it", "--measure", "rollout"]) == 0
    out = capsys.readouterr().out
    assert "after rollout" in out and "'it' gives the most rollout share to" in out


def test_commands_table_is_extensible():
    assert set(COMMANDS) >= {"explain", "heads", "compare"}
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(sub.choices) == set(COMMANDS)


def test_query_is_a_token_first_then_an_index(tmp_path):
    text = "I have 2 cats and 3 dogs"
    for query, expect in (("2", "2"), ("1", "i"), ("cats@1", "cats")):
        path = tmp_path / f"{expect}.json"
        assert main(["heads", text, "--query", query, "--prefer", "and", "--over", "dogs", "--json", str(path)]) == 0
        assert json.loads(path.read_text())["query"] == expect


def test_bench_passes_every_option_to_the_benchmark(tmp_path):
    r = run("bench", "--help", cwd=tmp_path)  # from any directory: bench/ is found in the source checkout
    assert r.returncode == 0, r.stderr
    assert "usage: python -m bench" in r.stdout and "--quick" in r.stdout and "--case" in r.stdout
    r = run("bench", "--case", "nonsense", cwd=tmp_path)
    assert r.returncode == 2 and "invalid choice: 'nonsense'" in r.stderr


def test_python_dash_m_qkv_is_the_command():
    import qkv

    done = subprocess.run([sys.executable, "-m", "qkv", "--version"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["qkv", qkv.__version__]


# ---------------------------------------------------------------------------------------------- hub ids
def test_a_hub_id_without_an_organisation_is_looked_up_not_refused(tmp_path, monkeypatch, capsys):
    """``--model gpt2`` is a valid hub id: not in the (empty) cache, it is explained as such, not as "not org/name"."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.delenv("HF_HOME", raising=False)
    assert main(["explain", "--model", "gpt2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("qkv explain: error: --model: no model called 'gpt2': not a directory here; as a hub id,")
    assert "'gpt2' is not in the local Hugging Face cache" in err and "huggingface-cli download gpt2" in err
    assert "org/name" not in err and not any(tmp_path.iterdir())


def test_a_cached_hub_id_without_an_organisation_loads(tmp_path, monkeypatch, capsys):
    import qkv.models

    snapshot = tmp_path / "models--tiny-minilm" / "snapshots" / "abc123"
    snapshot.parent.mkdir(parents=True)
    snapshot.symlink_to(qkv.models.resolve("minilm"), target_is_directory=True)
    (tmp_path / "models--tiny-minilm" / "refs").mkdir()
    (tmp_path / "models--tiny-minilm" / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    assert main(["explain", "--model", "tiny-minilm", "--top", "1"]) == 0
    assert "What 'it' (token 8) attends to" in capsys.readouterr().out
