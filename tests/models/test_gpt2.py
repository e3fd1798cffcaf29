"""GPT-2 in qkv == transformers.GPT2LMHeadModel on a small random checkpoint created at test time."""

import pytest
import torch

import qkv.models
from qkv.nn import Recorder, recording

from .conftest import max_rel_err, save_hf

transformers = pytest.importorskip("transformers")

VOCAB = 300
CORPUS = ["The cat sat on the mat because it was tired."] * 50


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(
        n_embd=64,
        n_layer=3,
        n_head=4,
        vocab_size=VOCAB,
        n_positions=48,
        initializer_range=0.2,
        bos_token_id=None,
        eos_token_id=None,
        attn_implementation="eager",
    )
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    path = save_hf(hf, tmp_path_factory.mktemp("gpt2"))
    byte_level_tokenizer().save(f"{path}/tokenizer.json")
    return qkv.models.load(path), hf


def byte_level_tokenizer():
    """A GPT-2-style byte-level BPE tokenizer trained on a toy corpus (vocab <= VOCAB)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=True)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=["<|endoftext|>"]
    )
    tok.train_from_iterator(CORPUS, trainer)
    return tok


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, VOCAB, (2, 11), generator=torch.Generator().manual_seed(1))


def test_logits_and_hidden_states_match(pair, ids):
    ours, hf = pair
    with torch.no_grad():
        a = ours(ids, output_hidden_states=True)
        b = hf(ids, output_hidden_states=True)
    assert a.logits.shape == (2, 11, VOCAB)
    assert b.logits.abs().max() > 1.0, "the checkpoint must give non-trivial logits"
    assert (a.logits - b.logits).abs().max().item() < 1e-4
    # transformers' last hidden state is after ln_f; qkv's hidden_states hold raw layer outputs
    for i in range(3):
        assert (a.hidden_states[i] - b.hidden_states[i]).abs().max().item() < 1e-4
    assert (a.last_hidden_state - b.hidden_states[-1]).abs().max().item() < 1e-4


def test_tied_head(pair):
    ours, _ = pair
    assert ours.lm_head.weight is ours.token_embedding.weight


def test_greedy_generate_equals_transformers(pair, ids):
    ours, hf = pair
    got = ours.generate(ids, 12)
    want = hf.generate(ids, max_new_tokens=12, do_sample=False)
    assert got.shape == (2, 23)
    assert torch.equal(got, want)
    assert len(set(got[0, 11:].tolist())) > 1, "generation should not be degenerate"


def test_left_padded_generate_equals_transformers(pair, ids):
    ours, hf = pair
    mask = torch.ones_like(ids)
    mask[1, :4] = 0
    got = ours.generate(ids, 6, attention_mask=mask)
    want = hf.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=False)
    assert torch.equal(got, want)


def test_kv_cache_decoding_equals_full_recomputation(pair, ids):
    ours, _ = pair
    with torch.no_grad():
        full = ours(ids).logits
        cache = ours.new_cache()
        parts = [ours(ids[:, :5], cache=cache).logits]
        for t in range(5, 11):
            parts.append(ours(ids[:, t : t + 1], cache=cache).logits)
    assert len(cache[0]) == 11
    torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=0, atol=1e-5)


def test_recording_with_cache_sees_all_keys(pair, ids):
    ours, _ = pair
    cache = ours.new_cache()
    with torch.no_grad():
        ours(ids[:, :7], cache=cache)
        with recording(Recorder(["layers.1.attention.*"])) as rec:
            ours(ids[:, 7:8], cache=cache)
    assert rec["layers.1.attention.q"].shape == (2, 4, 1, 16)
    assert rec["layers.1.attention.k"].shape == (2, 4, 8, 16)
    w = rec["layers.1.attention.weights"]
    assert w.shape == (2, 4, 1, 8)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 4, 1))


def test_causal_weights_match_transformers(pair, ids):
    ours, hf = pair
    with torch.no_grad(), recording(Recorder(["layers.*.attention.weights"])) as rec:
        ours(ids)
    with torch.no_grad():
        b = hf(ids, output_attentions=True).attentions
    for i in range(3):
        w = rec[f"layers.{i}.attention.weights"]
        assert (w - b[i]).abs().max().item() < 1e-5
        assert (w.triu(1) == 0).all()  # causal: no weight on future tokens


def test_base_checkpoint_without_prefix(tmp_path, pair, ids):
    """A GPT2Model (keys without 'transformer.') loads too and ties its head to the embedding."""
    _, hf = pair
    path = save_hf(hf.transformer, tmp_path / "base")
    ours = qkv.models.load(path)
    with torch.no_grad():
        a = ours(ids).last_hidden_state
        b = hf.transformer(ids).last_hidden_state
    assert (a - b).abs().max().item() < 1e-4


def test_sharded_checkpoint(tmp_path, pair, ids):
    ours, hf = pair
    path = save_hf(hf, tmp_path / "sharded", max_shard_size="40KB")
    from pathlib import Path

    assert (Path(path) / "model.safetensors.index.json").is_file()
    sharded = qkv.models.load(path)
    with torch.no_grad():
        torch.testing.assert_close(sharded(ids).logits, ours(ids).logits, rtol=0, atol=0)


def test_float64_load(pair, ids):
    ours, hf = pair
    path = ours.config.name
    m64 = qkv.models.load(path, dtype=torch.float64)
    assert m64.lm_head.weight.dtype == torch.float64
    with torch.no_grad():
        assert max_rel_err(m64(ids).logits.float(), hf(ids).logits) < 1e-5


def test_byte_level_tokenizer_offsets_and_round_trip(pair):
    ours, _ = pair
    tok = ours.tokenizer
    text = "The cat sat, naïve!"
    enc = tok.encode(text)
    assert enc.tokens[:3] == ["The", "Ġcat", "Ġsat"] and not any(enc.special)
    assert [text[a:b] for a, b in enc.offsets[:4]] == ["The", "cat", "sat", ","]
    assert tok.decode(enc.ids) == text
    ids, mask = tok.encode_batch([text, "The cat"])
    assert mask.sum(1).tolist() == [len(enc), 2]
    out = ours.generate(ids[1:, :2], 5)
    assert tok.decode(out[0, :2]) == "The cat" and out.shape == (1, 7)


def test_generate_pads_after_eos_like_transformers(pair, ids):
    ours, hf = pair
    free = ours.generate(ids, 8)
    eos = int(free[0, 11 + 2])  # the token row 0 produces at step 3
    got = ours.generate(ids, 8, eos_token_id=eos, pad_token_id=0)
    want = hf.generate(ids, max_new_tokens=8, do_sample=False, eos_token_id=eos, pad_token_id=0)
    first = int((free[0, 11:] == eos).nonzero()[0]) + 11  # first eos in row 0 (step 3 or earlier)
    assert got[0, first] == eos and (got[0, first + 1 :] == 0).all()
    assert torch.equal(got[:, : want.shape[1]], want)  # transformers stops once every row is done
    assert got.shape == (2, 19)


def test_bfloat16_load_is_close(pair, ids):
    ours, _ = pair
    bf = qkv.models.load(ours.config.name, dtype=torch.bfloat16)
    with torch.no_grad():
        a, b = bf(ids).logits, ours(ids).logits
    assert a.dtype == torch.bfloat16
    assert max_rel_err(a.float(), b) < 5e-2


def test_right_padded_batch_matches_transformers(pair, ids):
    ours, hf = pair
    mask = torch.ones_like(ids)
    mask[0, 7:] = 0
    with torch.no_grad():
        a = ours(ids, mask).logits
        b = hf(ids, attention_mask=mask).logits
    valid = mask.bool()
    assert (a - b)[valid].abs().max().item() < 1e-4
    torch.testing.assert_close(a[0, :7], ours(ids[:1, :7]).logits[0], rtol=0, atol=1e-5)
