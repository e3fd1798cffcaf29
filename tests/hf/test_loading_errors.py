"""Errors of the transformers path that say what happened: a tokenizer failure keeps its cause, a missing private
transformers hook warns once, naming the slower path."""

import sys
import warnings

import pytest
import torch

pytest.importorskip("transformers")

import qkv.hf  # noqa: E402
import qkv.hf.backend as backend  # noqa: E402


@pytest.fixture
def bert_dir(tmp_path):
    """A tiny transformers BERT checkpoint with a WordPiece vocab.txt (no tokenizer.json)."""
    from transformers import BertConfig, BertModel, BertTokenizer

    torch.manual_seed(0)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizer(str(tmp_path / "vocab.txt")).save_pretrained(tmp_path)
    cfg = BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
    )
    BertModel(cfg).save_pretrained(tmp_path)
    (tmp_path / "tokenizer.json").unlink(missing_ok=True)  # transformers' AutoTokenizer path, not qkv's reader
    return tmp_path


def test_a_working_tokenizer_loads(bert_dir):
    hm = qkv.hf.load(bert_dir)
    assert hm.tokenizer is not None and hm.tokenizer.tokenize("the cat") == ["the", "cat"]


def test_a_broken_tokenizer_keeps_its_cause(bert_dir):
    (bert_dir / "tokenizer_config.json").write_text("{ not json")
    with pytest.raises(
        ValueError,
        match=r"has tokenizer files \(tokenizer_config.json, vocab.txt\) but transformers "
        r"cannot load them \(.*Error",
    ) as e:
        qkv.hf.load(bert_dir)
    assert e.value.__cause__ is not None and "restore the checkpoint's original tokenizer files" in str(e.value)


def test_no_tokenizer_files_is_no_tokenizer(bert_dir):
    for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        (bert_dir / name).unlink(missing_ok=True)
    assert qkv.hf.load(bert_dir).tokenizer is None


def test_a_missing_private_collector_warns_once_naming_the_slower_path(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers.utils.output_capturing", None)  # import now fails
    monkeypatch.setattr(backend, "_WARNED_NO_COLLECTOR", False)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert backend._wants_attentions() is True
        assert backend._wants_attentions() is True
    said = [w for w in seen if "_active_collector" in str(w.message)]
    assert len(said) == 1 and said[0].category is RuntimeWarning
    assert "qkv.steps, the slower path" in str(said[0].message)


def test_with_the_collector_there_is_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert backend._wants_attentions() is False  # nothing collects attentions outside a forward
