"""The CLI on Chinese text: a note in the command's words (``--model``), never a bare token list."""

import pytest

from qkv.cli import main

CHINESE = "猫坐在垫子上，因为它累了。"


def test_explain_on_chinese_text_explains_unk_and_names_the_flag(capsys):
    assert main(["explain", CHINESE, "--query", "它"]) == 2
    err = capsys.readouterr().err
    note, error = err.strip().splitlines()
    assert note.startswith("qkv: note: 9 of the 13 tokens of the text became [UNK]")
    assert "Chinese characters become [UNK]" in note and "use --model DIR" in note and "model=" not in note
    assert error.startswith("qkv explain: error: token '它' is not among the tokens the model read")
    assert error.endswith("see the note above")


def test_a_found_token_still_runs_with_the_note(capsys):
    assert main(["explain", CHINESE, "--query", "上", "--top", "2"]) == 0
    out, err = capsys.readouterr()
    assert "qkv: note:" in err and "use --model DIR" in err
    assert "attends to" in out


@pytest.mark.parametrize(
    "argv",
    [
        ["heads", "The cat 猫 sat on the mat.", "--query", "cat", "--prefer", "猫", "--over", "mat"],
        ["explain", "The cat 猫 sat on the mat.", "--query", "它"],
    ],
)
def test_a_token_lost_to_unk_in_mostly_english_text(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "qkv: note:" not in err  # most of the text is known: no note, the error explains
    assert "became [UNK]" in err and "use --model DIR" in err and 'model="DIR"' not in err
