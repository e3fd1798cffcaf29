"""``qkv ablate``, ``qkv patch`` and ``qkv probe --causal`` end to end on MiniLM (in process): tables, the documented
--json, PNG, figures equal to the library's, bad input as one line and exit status 2."""

import json
from pathlib import Path

import pytest

from qkv import lens
from qkv.cli import COMMANDS, main

TEXT = "The cat sat on the mat because it was tired."
OTHER = "The cat sat on the mat because it was soft."
TWINS = Path(__file__).parents[1] / "src" / "qkv" / "lens" / "data" / "twins.jsonl"


def test_ablate_grid_json_png(tmp_path, capsys):
    assert {"ablate", "patch"} <= set(COMMANDS)
    rc = main(
        [
            "ablate",
            TEXT,
            "--prefer",
            "cat",
            "--over",
            "mat",
            "--json",
            str(tmp_path / "a.json"),
            "--png",
            str(tmp_path / "a.png"),
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0 and "zero-ablating each head" in out and "Top 5 heads" in out and "on the plain run" in out
    doc = json.loads((tmp_path / "a.json").read_text())
    assert doc["command"] == "ablate" and doc["how"] == "zero" and doc["metric"]["name"] == "preference"
    assert len(doc["heads"]) == 72 and set(doc["heads"][0]) == {"layer", "head", "effect"}
    one = lens.effect(TEXT, [lens.ablate(2, 3)], lens.preference("it", "cat", "mat"))
    assert abs(doc["metric"]["base"] - one.base) < 1e-6
    assert abs(next(h["effect"] for h in doc["heads"] if (h["layer"], h["head"]) == (2, 3)) - one.effect) < 1e-5
    assert (tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_patch_json_with_attribution(tmp_path, capsys):
    rc = main(
        ["patch", TEXT, OTHER, "--prefer", "cat", "--over", "mat", "--attribution", "--json", str(tmp_path / "p.json")]
    )
    out = capsys.readouterr().out
    assert rc == 0 and "restores at most" in out and "Spearman" in out
    doc = json.loads((tmp_path / "p.json").read_text())
    assert doc["how"] == "patch" and len(doc["heads"]) == 72 and {"restored", "left", "step"} <= set(doc["heads"][0])
    assert -1 <= doc["attribution"]["denoise"] <= 1 and doc["metric"]["clean"] != doc["metric"]["corrupted"]


@pytest.mark.parametrize(
    "argv, words",
    [
        (["ablate", TEXT, "--prefer", "dog", "--over", "mat"], "'dog' is not in the text"),
        (["ablate", TEXT, "--prefer", "cat", "--over", "mat", "--how", "resample"], "--source"),
        (
            ["ablate", TEXT, "--prefer", "cat", "--over", "mat", "--how", "resample", "--source", "A dog."],
            "same token count",
        ),
        (["ablate", TEXT, "--prefer", "cat", "--over", "mat", "--png", "x.jpg"], "--png wants a path ending in .png"),
        (["patch", TEXT, "The cat sat.", "--prefer", "cat", "--over", "mat"], "same token count"),
        (["patch", TEXT, TEXT, "--prefer", "cat", "--over", "mat"], "expected them to differ"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, words, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"qkv {argv[0]}: error: ") and words in err[0], err


def test_probe_causal_adds_the_causal_section(tmp_path, capsys):
    items = tmp_path / "four.jsonl"
    items.write_text("\n".join(TWINS.read_text().splitlines()[:4]) + "\n")
    rc = main(["probe", str(items), "--rounds", "50", "--splits", "3", "--causal", "--json", str(tmp_path / "c.json")])
    out = capsys.readouterr().out
    assert rc == 0 and "Causal probe" in out and "Spearman" in out
    doc = json.loads((tmp_path / "c.json").read_text())
    c = doc["causal"]
    assert doc["schema"] == "qkv.probe" and c["schema"] == "qkv.causal" and c["items"]["used"] == 4
    assert len(c["heads"]) == 72 and {"effect", "ci_low", "ci_high", "weight_preference"} <= set(c["heads"][0])
    assert c["how"] == "zero" and c["metric"]["name"] == "preference"
    assert c["correlation"]["ci_low"] <= c["correlation"]["value"] <= c["correlation"]["ci_high"]
