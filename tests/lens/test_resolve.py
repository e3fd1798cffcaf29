"""One rule for naming a token and a pair (:meth:`Trace.resolve`), and qkv's own ValueError for bad arguments."""

import pytest
import torch

from qkv.lens.essay import ESSAY_SENTENCE
from qkv.lens.trace import Resolved, Trace

TOKENS = ["[CLS]", "It", "is", "it", "un", "##bel", "ĠIt", "[SEP]"]
OFFSETS = [(0, 0), (0, 2), (3, 5), (6, 8), (9, 11), (11, 14), (15, 17), (0, 0)]


@pytest.fixture
def cased():
    """A cased vocabulary: ``It`` (1), ``it`` (3) and byte-level ``ĠIt`` (6); ``unbel`` in two pieces."""
    w = torch.rand(2, 3, 8, 8).softmax(-1)  # (N=2, H=3, L=8, L=8)
    special = [True] + [False] * 6 + [True]
    return Trace.from_tensors("It is it unbel It", TOKENS, weights=w, offsets=OFFSETS, special=special)


@pytest.mark.parametrize(
    "query, index",
    [("It", 1), ("it", 3), ("IT", 1), ("It@2", 6), ("iT@1", 1), (3, 3), ("3", 3), ("-2", 6), (-1, 7), ("un", 4)],
)
def test_exact_case_first_else_case_insensitive_and_digits_are_indices(cased, query, index):
    assert cased.index(query) == index


def test_an_index_as_a_string_is_the_same_token_as_the_int(cased):
    assert [cased.index(str(i)) for i in range(-8, 8)] == [cased.index(i) for i in range(-8, 8)]


@pytest.mark.parametrize(
    "query, message",
    [
        ("unbel", r"token 'unbel' is not one token: the model reads it as 2 pieces \('un' '##bel', tokens 4\.\.5\)"),
        ("it@2", r"only 1 occurrence\(s\) of 'it'; use it@1\.\.it@1"),
        ("dog", r"token 'dog' is not in the text; tokens are"),
        ("9", r"token index 9 is out of range; the text has 8 tokens"),
        (True, r"a query token must be .* got bool True"),
        (1.0, r"got float 1.0"),
        ("  ", r"non-empty string"),
    ],
)
def test_a_query_not_in_the_text_says_why(cased, query, message):
    with pytest.raises(ValueError, match=message):
        cased.index(query)


def test_default_query_is_the_first_pronoun_else_the_first_word():
    w = torch.ones(1, 1, 5, 5) / 5
    t = Trace.from_tensors(
        "the cat saw her", ["[CLS]", "the", "cat", "her", "[SEP]"], weights=w, special=[True, False, False, False, True]
    )
    assert t.resolve() == Resolved(3, None, None)
    t = Trace.from_tensors(
        "the cat sat", ["[CLS]", "the", "cat", "sat", "[SEP]"], weights=w, special=[True, False, False, False, True]
    )
    assert t.resolve().query == 1


@pytest.fixture(scope="module")
def essay(minilm):
    import qkv

    return qkv.trace(ESSAY_SENTENCE, minilm)


@pytest.mark.parametrize("query", [None, "it", "It", "it@1", 8, "8", -5])
def test_the_essay_pair_follows_the_resolved_pronoun_not_its_spelling(essay, query):
    assert essay.resolve(query) == Resolved(8, essay.index("cat"), essay.index("mat"))


def test_the_essay_pair_only_for_its_pronoun_and_its_sentence(essay, minilm):
    import qkv

    assert essay.resolve("cat") == Resolved(2, None, None)
    soft = qkv.trace(ESSAY_SENTENCE.replace("tired", "soft"), minilm)
    assert soft.resolve("it") == Resolved(8, None, None)
    assert essay.resolve("it", "mat", "cat") == Resolved(8, 6, 2)  # a given pair wins


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"prefer": "cat"}, r"give both prefer and over"),
        ({"prefer": "cat", "over": "cat"}, r"prefer and over name the same token \('cat' at 2\)"),
        ({"prefer": "dog", "over": "cat"}, r"^prefer: token 'dog' is not in the text"),
        ({"prefer": "cat", "over": "dog"}, r"^over: token 'dog' is not in the text"),
    ],
)
def test_pair_errors(essay, kwargs, message):
    with pytest.raises(ValueError, match=message):
        essay.resolve("it", **kwargs)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda t: t.attention(True, 0), r"layer must be an integer \(0\.\.1\), got bool True"),
        (lambda t: t.attention(0, False), r"head must be an integer \(0\.\.2\), got bool False"),
        (lambda t: t.attention(0.0, 0), r"got float 0.0"),
        (lambda t: t.top("it", k="3"), r"k must be an integer >= 1, got '3'"),
        (lambda t: t.top("it", k=True), r"k must be an integer >= 1, got True"),
        (lambda t: t.top("it", k=0), r"k must be an integer >= 1, got 0"),
    ],
)
def test_arguments_of_the_wrong_type_get_qkvs_error(cased, call, message):
    with pytest.raises(ValueError, match=message):
        call(cased)


def test_breakdown_of_a_batch_trace_without_scores_says_what_to_record(minilm):
    from qkv.lens.trace import trace_batch

    (t,) = trace_batch(["the cat sat"], minilm, steps=("weights",))
    with pytest.raises(ValueError, match=r"did not record 'scores'; trace with steps including 'scores'"):
        t.breakdown(1, 0, 0)
