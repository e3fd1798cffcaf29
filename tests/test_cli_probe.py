"""``qkv probe`` end to end on MiniLM (in process): table, verdict, --json, --png, errors naming line and field."""

import json
import shutil
from pathlib import Path

import pytest

from qkv.cli import COMMANDS, main

SAMPLE_XML = Path(__file__).parent / "lens" / "data" / "wsc_sample.xml"


def test_probe_shipped_twins_table_json_png(tmp_path, capsys):
    assert "probe" in COMMANDS
    rc = main(["probe", "--rounds", "100", "--json", str(tmp_path / "p.json"), "--png", str(tmp_path / "p.png")])
    out = capsys.readouterr().out
    assert rc == 0
    for text in (
        "Best heads of minilm",
        "held-out best head",
        "baseline: first",
        "baseline: nearest",
        "baseline: random",
        "mean over heads",
        "permutation p",
        "sign test",
        "verdict: ",
    ):
        assert text in out, text
    doc = json.loads((tmp_path / "p.json").read_text())
    assert doc["schema"] == "qkv.probe" and doc["items"]["total"] == 96 and doc["items"]["used"] == 96
    assert set(doc["baselines"]) == {"first", "nearest", "random"}
    assert set(doc["heldout"]) >= {"accuracy", "ci_low", "ci_high", "heads_chosen"}
    assert set(doc["null"]) >= {"best_of_heads_p"} and set(doc["twins"]) >= {
        "mean_flips",
        "toward_right",
        "toward_wrong",
        "sign_test_p",
    }
    assert isinstance(doc["mean_over_heads"], float) and doc["verdict"] in out
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_probe_wsc_xml_reports_skipped(tmp_path, capsys):
    shutil.copy(SAMPLE_XML, tmp_path / "WSCollection.xml")
    rc = main(
        [
            "probe",
            str(tmp_path / "WSCollection.xml"),
            "--measure",
            "rollout",
            "--pieces",
            "first",
            "--rounds",
            "50",
            "--json",
            str(tmp_path / "w.json"),
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0 and "6 items, 5 used, 1 skipped" in out and "skipped wsc-5" in out
    doc = json.loads((tmp_path / "w.json").read_text())
    assert doc["items"]["skipped"][0]["id"] == "wsc-5" and "The rider" in doc["items"]["skipped"][0]["reason"]
    assert doc["heads_per_layer"] == 1 and doc["measure"] == "rollout" and doc["pieces"] == "first"


@pytest.mark.parametrize(
    "content,message",
    [
        ('{"text": "A cat.", "query": "it"}', r"items.jsonl:1: missing field 'candidates'"),
        (
            (
                '{"text": "The cat sat because it sat.", "query": {"text": "it", "start": 99}, '
                '"candidates": ["The cat", "sat"], "answer": 0}'
            ),
            r"items.jsonl:1: field 'query': span 'it' at 99..101 is out of range",
        ),
        ("not json", r"items.jsonl:1: not valid JSON"),
    ],
)
def test_probe_bad_input_exits_2(tmp_path, capsys, content, message):
    import re

    p = tmp_path / "items.jsonl"
    p.write_text(content)
    assert main(["probe", str(p)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("qkv probe: error: ") and re.search(message, err), err


def test_probe_argument_errors(tmp_path, capsys):
    assert main(["probe", str(tmp_path / "nope.jsonl")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["probe", "--png", str(tmp_path / "grid.jpg")]) == 2
    assert "--png wants a path ending in .png" in capsys.readouterr().err
    assert main(["probe", "--rounds", "0"]) == 2
    assert "--rounds must be at least 1" in capsys.readouterr().err
