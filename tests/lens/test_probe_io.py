"""Reading probe items: qkv's JSONL schema, the WSC XML as distributed, the shipped twins, bad input."""

import json
from pathlib import Path

import pytest

from qkv.lens.probe_io import Span, load_twins, parse_jsonl, parse_wsc_xml, read_items, twins_path
from qkv.lens.probing import head_word

SAMPLE_XML = Path(__file__).with_name("data") / "wsc_sample.xml"
TEXT = "The cat sat on the mat because it was tired."


def line(**fields) -> str:
    base = {"text": TEXT, "query": {"text": "it", "start": 31}, "candidates": ["The cat", "the mat"], "answer": 0}
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not None})


def test_jsonl_spans_strings_and_answers():
    d = parse_jsonl("\n".join([line(id="a", pair="p"), "", "# a comment", line(query="it", answer="the mat")]), "f")
    a, b = d.items
    assert (a.id, a.pair, a.line, b.id, b.line) == ("a", "p", 1, "line 4", 4)
    assert a.query == Span("it", 31, 33) and a.candidates == (Span("The cat", 0, 7), Span("the mat", 15, 22))
    assert b.answer == 1 and not d.skipped and d.total == 2


def test_jsonl_repeated_word_picked_by_start():
    text = "The dog saw the other dog before it barked at it."
    d = parse_jsonl(
        json.dumps(
            {
                "text": text,
                "query": {"text": "it", "start": 46},
                "candidates": [{"text": "dog", "start": 22}, "The dog"],
                "answer": 0,
            }
        )
    )
    it = d.items[0]
    assert it.query == Span("it", 46, 48) and it.candidates[0] == Span("dog", 22, 25)
    with pytest.raises(ValueError, match=r'f:1: field \'query\': \'it\' occurs 2 times \(at \[33, 46\]\).*"start": 46'):
        parse_jsonl(json.dumps({"text": text, "query": "it", "candidates": ["dog", "The dog"], "answer": 0}), "f")


def test_jsonl_missing_candidate_is_skipped_with_a_reason():
    d = parse_jsonl(line(id="x", candidates=["The cat", "the dog"]))
    assert not d.items and d.skipped[0].to_dict() == {
        "id": "x",
        "line": 1,
        "reason": "candidate 'the dog' does not occur in the text",
    }


@pytest.mark.parametrize(
    "bad,match",
    [
        ("{not json", r"f:1: not valid JSON .* column"),
        ("[1, 2]", r"f:1: expected a JSON object per line, got list"),
        (line(answer=None), r"f:1: missing field 'answer'"),
        (line(text=""), r"f:1: field 'text': expected a non-empty string"),
        (
            line(query={"text": "it", "start": 99}),
            (
                r"f:1: field 'query': span 'it' at 99..101 is out of range; the text "
                r"has 44 characters"
            ),
        ),
        (
            line(query={"text": "it", "start": 30}),
            (
                r"field 'query': text\[30:32\] is ' i', not 'it'; fix 'start' "
                r"\(the word occurs at 31\)"
            ),
        ),
        (line(query={"text": "it", "start": "31"}), r"field 'query': 'start' must be an integer"),
        (line(query="he"), r"field 'query': 'he' does not occur in the text"),
        (line(candidates=["The cat"]), r"field 'candidates': expected a list of at least 2"),
        (line(candidates=["The cat", {"text": "mat", "start": 99}]), r"field 'candidates\[1\]': span 'mat' at 99"),
        (line(candidates=["The cat", 3]), r"field 'candidates\[1\]': expected a string or"),
        (line(answer=2), r"field 'answer': expected a candidate index 0..1 or a candidate's text, got 2"),
        (line(answer="the dog"), r"field 'answer': 'the dog' is not one of the candidates"),
        (line(pair=[1]), r"field 'pair': expected a string or integer"),
    ],
)
def test_jsonl_bad_input_names_line_and_field(bad, match):
    with pytest.raises(ValueError, match=match):
        parse_jsonl(bad, "f")


def test_jsonl_error_on_a_later_line_names_that_line():
    with pytest.raises(ValueError, match=r"^f:3: field 'answer'"):
        parse_jsonl("\n".join([line(), line(), line(answer=5)]), "f")
    with pytest.raises(ValueError, match="no items"):
        parse_jsonl("\n# nothing\n", "f")


def test_wsc_xml_sample_in_the_distributed_format():
    d = read_items(SAMPLE_XML)
    assert d.total == 6 and [it.id for it in d.items] == ["wsc-1", "wsc-2", "wsc-3", "wsc-4", "wsc-6"]
    trophy, small, jar, _, sue = d.items
    assert trophy.text == "The trophy doesn't fit into the brown suitcase because it is too large."
    assert trophy.query == Span("it", 55, 57) and trophy.text[55:57] == "it"
    # "the suitcase" is not in the text ("the brown suitcase"): its head word is used
    assert trophy.candidates == (Span("The trophy", 0, 10), Span("suitcase", 38, 46))
    assert (trophy.answer, small.answer, jar.answer) == (0, 1, 0)  # "A", " B ", "A."
    assert trophy.pair == small.pair != jar.pair  # twins share the answers; case and "the" ignored
    assert sue.text == "Sue lent the book to Kim, who thanked her." and sue.query == Span("her", 38, 41)
    assert [head_word(c).text for c in jar.candidates] == ["jar", "box"]
    (skip,) = d.skipped
    assert skip.id == "wsc-5" and skip.line is not None
    assert "'The rider'" in skip.reason and "does not occur" in skip.reason
    assert (trophy.line, small.line) == (4, 22)


@pytest.mark.parametrize(
    "bad,match",
    [
        ("<collection><schema><text><txt1>a</txt1>", r"f:1: malformed XML at column"),
        ("<collection></collection>", r"no <schema> elements"),
        (
            "<collection><schema><text><txt1>A b</txt1><txt2>c</txt2></text></schema></collection>",
            r"schema 1: missing field 'text/pron'",
        ),
        (
            (
                "<collection><schema><text><txt1>A b</txt1><pron>it</pron><txt2>c</txt2></text>"
                "<answers><answer>A</answer></answers></schema></collection>"
            ),
            r"field 'answers' needs at least 2",
        ),
        (
            (
                "<collection><schema><text><txt1>A b</txt1><pron>it</pron><txt2>c</txt2></text>"
                "<answers><answer>A</answer><answer>b</answer></answers><correctAnswer>C</correctAnswer></schema></collection>"
            ),
            r"field 'correctAnswer' must be a letter A..B, got 'C'",
        ),
    ],
)
def test_wsc_xml_bad_input(bad, match):
    with pytest.raises(ValueError, match=match):
        parse_wsc_xml(bad, "f")


def test_read_items_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_items(tmp_path / "missing.jsonl")
    p = tmp_path / "x.jsonl"
    p.write_text(line() + "\n" + "{oops\n")
    with pytest.raises(ValueError, match=r"x.jsonl:2: not valid JSON"):
        read_items(p)


def test_shipped_twins_are_balanced_original_pairs():
    d = load_twins()
    assert twins_path().is_file() and (twins_path().parent / "README.md").read_text().count("CC0") >= 1
    assert not d.skipped and len(d.items) >= 80
    pairs: dict[str, list] = {}
    for it in d.items:
        pairs.setdefault(it.pair, []).append(it)
        for s in (it.query, *it.candidates):
            assert it.text[s.start : s.end] == s.text
    assert len(pairs) >= 40 and all(len(p) == 2 for p in pairs.values())
    for a, b in pairs.values():
        assert a.candidates == b.candidates and {a.answer, b.answer} == {0, 1} and a.query.text == b.query.text
        assert a.text != b.text
        heads = [head_word(c).text.lower() for c in a.candidates]
        assert len(set(heads)) == 2
