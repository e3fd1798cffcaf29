"""Text the model's vocabulary does not cover (Chinese through the English MiniLM) is explained, not listed."""

import pytest

import qkv

CHINESE = "猫坐在垫子上，因为它累了。"  # "The cat sat on the mat because it was tired."


@pytest.fixture(scope="module")
def zh_trace(minilm):
    return qkv.trace(CHINESE, model=minilm)


def test_chinese_characters_become_unk_and_the_trace_says_so(zh_trace):
    assert zh_trace.tokens.count("[UNK]") == len(zh_trace.unknown) >= 5
    assert zh_trace.mostly_unknown
    note = zh_trace.vocabulary_note()
    assert f"{len(zh_trace.unknown)} of the {len(zh_trace) - 2} tokens of the text became [UNK]" in note
    assert "vocabulary is English" in note and "Chinese characters become [UNK]" in note
    assert 'pass model="DIR"' in note and "bert-base-chinese" in note
    assert "--" not in note  # a library message names no CLI flag


def test_a_query_lost_to_unk_gets_the_explanation_not_a_token_list(zh_trace):
    with pytest.raises(ValueError, match=r"not in the text as the model reads it: .*became \[UNK\]") as e:
        zh_trace.index("它")
    assert "tokens are:" not in str(e.value)


def test_english_text_has_no_note(cat_trace):
    assert cat_trace.unknown == [] and not cat_trace.mostly_unknown and cat_trace.vocabulary_note() is None
    with pytest.raises(ValueError, match="close matches"):
        cat_trace.index("cats")


def test_a_few_unknown_characters_are_not_most_of_the_text(minilm):
    t = qkv.trace("The cat 猫 sat on the mat because it was tired.", model=minilm)
    assert t.unknown == [3] and not t.mostly_unknown
    with pytest.raises(ValueError, match=r"1 of the 12 tokens of the text became \[UNK\]"):
        t.index("猫")
