"""qkv's Tokenizer on MiniLM's tokenizer.json vs transformers' tokenizer; offsets, truncation, batches."""

import subprocess
import sys
import unicodedata

import pytest
import torch

TEXTS = ["The cat sat on the mat because it was tired.", "Unbelievably, naïve résumés — 42!", "a"]


@pytest.fixture(scope="module")
def tok(minilm):
    return minilm.tokenizer


def test_ids_match_transformers_tokenizer(tok, minilm_path):
    transformers = pytest.importorskip("transformers")
    ref = transformers.AutoTokenizer.from_pretrained(minilm_path)
    for text in TEXTS:
        assert tok.encode(text).ids == ref(text)["input_ids"]


def test_offsets_point_into_the_text(tok):
    """Each wordpiece is its text span, lower-cased and accent-stripped (MiniLM is uncased)."""
    text = TEXTS[1]
    enc = tok.encode(text)
    assert enc.special[0] and enc.special[-1] and not any(enc.special[1:-1])
    assert enc.offsets[0] == enc.offsets[-1] == (0, 0)

    def fold(s):
        return "".join(c for c in unicodedata.normalize("NFD", s.lower()) if not unicodedata.combining(c))

    for t, (a, b) in zip(enc.tokens[1:-1], enc.offsets[1:-1]):
        assert fold(text[a:b]) == t.removeprefix("##"), (t, text[a:b])
    assert [text[a:b] for a, b in enc.offsets[7:9]] == ["naïve", "résumé"]


def test_too_long_raises_and_truncate_keeps_specials(tok):
    text = "word " * 600
    with pytest.raises(
        ValueError,
        match=r"text is 602 tokens long but the model accepts at most 512 positions; "
        r"pass truncate=True",
    ):
        tok.encode(text)
    enc = tok.encode(text, truncate=True)
    assert len(enc) == 512 and enc.tokens[0] == "[CLS]" and enc.tokens[-1] == "[SEP]"
    ids, mask = tok.encode_batch([text, "short"], truncate=True)
    assert ids.shape == mask.shape == (2, 512)


def test_encode_batch_pads_right(tok):
    ids, mask = tok.encode_batch(TEXTS)
    assert ids.dtype == mask.dtype == torch.long
    lengths = [len(tok.encode(t)) for t in TEXTS]
    assert mask.sum(1).tolist() == lengths and ids.shape == (3, max(lengths))
    assert (ids[2, lengths[2] :] == tok.pad_token_id).all() and tok.pad_token_id == 0
    with pytest.raises(ValueError, match="encode_batch expects a non-empty list of str"):
        tok.encode_batch("one string")


def test_decode_round_trip(tok):
    enc = tok.encode(TEXTS[0])
    assert tok.decode(enc.ids) == "[CLS] the cat sat on the mat because it was tired. [SEP]"
    assert tok.decode(torch.tensor(enc.ids), skip_special_tokens=True) == TEXTS[0].lower()


def test_token_spells_an_id_and_refuses_an_unknown_one(tok):
    enc = tok.encode(TEXTS[0])
    assert [tok.token(i) for i in enc.ids[:3]] == enc.tokens[:3]
    with pytest.raises(
        ValueError, match=rf"token id {tok.vocab_size} is not in the vocabulary \(ids 0\.\.{tok.vocab_size - 1}\)"
    ):
        tok.token(tok.vocab_size)


def test_importing_qkv_models_does_not_import_transformers():
    code = (
        "import qkv.models, qkv.nn, sys; m = qkv.models.load('minilm'); "
        "m(*m.tokenizer.encode_batch(['hi'])); "
        "bad = [n for n in ('transformers', 'sentence_transformers') if n in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
