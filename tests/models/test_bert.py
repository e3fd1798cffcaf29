"""MiniLM (BERT) in qkv == transformers.BertModel (eager) and sentence-transformers, on a padded batch."""

import pytest
import torch

from qkv.nn import MultiHeadAttention, Recorder, recording

from .conftest import SENTENCES


@pytest.fixture(scope="module")
def batch(minilm):
    ids, mask = minilm.tokenizer.encode_batch(SENTENCES)
    assert (mask == 0).any(), "the batch must contain padding"
    return ids, mask


@pytest.fixture(scope="module")
def both(minilm, hf_minilm, batch):
    ids, mask = batch
    rec = Recorder()
    with torch.no_grad(), recording(rec):
        ours = minilm(ids, mask, output_hidden_states=True)
    with torch.no_grad():
        theirs = hf_minilm(input_ids=ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
    return ours, theirs, rec


@pytest.mark.parametrize("recorded", [False, True], ids=["fast-path", "recorded"])
def test_every_hidden_state_matches_transformers(minilm, both, batch, recorded):
    _, theirs, _ = both
    if recorded:
        ours = both[0]
    else:
        with torch.no_grad():
            ours = minilm(*batch, output_hidden_states=True)
    valid = batch[1].bool()  # (B, L): compare real tokens (padded rows are never used)
    assert len(ours.hidden_states) == len(theirs.hidden_states) == 7
    for i, (a, b) in enumerate(zip(ours.hidden_states, theirs.hidden_states)):
        err = (a - b).abs()[valid].max().item()
        assert err < 1e-5, f"hidden state {i}: max abs error {err}"
    assert torch.equal(ours.last_hidden_state, ours.hidden_states[-1])


def test_recorded_attention_weights_match_output_attentions(both, batch):
    ours, theirs, rec = both
    valid_q = batch[1].bool()[:, None, :, None]  # (B, 1, Lq, 1)
    for i, hw in enumerate(theirs.attentions):
        w = rec[f"layers.{i}.attention.weights"]
        assert w.shape == hw.shape == (2, 12, batch[0].shape[1], batch[0].shape[1])
        err = (w - hw).abs().masked_fill(~valid_q, 0).max().item()
        assert err < 1e-5, f"layer {i}: attention weights differ by {err}"
        # padded keys get weight exactly 0
        assert (w[1][..., ~batch[1][1].bool()] == 0).all()


def test_recorded_steps_are_the_forward_pass(minilm, both, batch):
    """The recorded chain reproduces layer 0's attention output and the hidden states entering each layer."""
    ours, _, rec = both
    att = minilm.layers[0].attention
    B, L = batch[0].shape
    for step in ("q", "k", "v", "output"):
        assert rec[f"layers.0.attention.{step}"].shape == (B, 12, L, 32)
    assert rec["layers.0.attention.scores"].shape == (B, 12, L, L)
    torch.testing.assert_close(rec["layers.0.attention.scaled"], rec["layers.0.attention.scores"] / 32**0.5)
    torch.testing.assert_close(
        rec["layers.0.attention.weights"] @ rec["layers.0.attention.v"], rec["layers.0.attention.output"]
    )
    for i in range(6):
        torch.testing.assert_close(rec[f"layers.{i}.input"], ours.hidden_states[i], rtol=0, atol=0)
    # q is the projection of the layer input
    x = rec["layers.0.input"]
    q = att.q_proj(x).view(B, L, 12, 32).transpose(1, 2)
    torch.testing.assert_close(rec["layers.0.attention.q"], q)


def test_recording_does_not_change_the_output(minilm, both, batch):
    """The fast path (impl='auto') and the recorded reference steps agree on every real token."""
    ours, _, _ = both
    with torch.no_grad():
        plain = minilm(*batch)
    valid = batch[1].bool()
    assert (plain.last_hidden_state - ours.last_hidden_state)[valid].abs().max().item() < 1e-5


def test_pooled_equals_sentence_transformers(minilm, minilm_path, both):
    st = pytest.importorskip("sentence_transformers")
    model = st.SentenceTransformer(minilm_path, device="cpu")
    ref = model.encode(SENTENCES, convert_to_tensor=True, normalize_embeddings=True)
    ours = both[0].pooled
    assert ours.shape == (2, 384)
    assert (ours - ref).abs().max().item() < 1e-5
    torch.testing.assert_close(ours.norm(dim=1), torch.ones(2))


def test_token_type_ids_match_transformers(minilm, hf_minilm):
    enc = minilm.tokenizer.encode("A cat. A dog.")
    ids = torch.tensor([enc.ids])
    types = torch.zeros_like(ids)
    types[0, 4:] = 1
    with torch.no_grad():
        a = minilm(ids, token_type_ids=types).last_hidden_state
        b = hf_minilm(input_ids=ids, token_type_ids=types).last_hidden_state
        c = minilm(ids).last_hidden_state
    assert (a - b).abs().max().item() < 1e-5
    assert (a - c).abs().max().item() > 1e-3  # token types do matter


def test_model_structure_contract(minilm):
    cfg = minilm.config
    assert (
        cfg.model_type,
        cfg.hidden_size,
        cfg.num_layers,
        cfg.num_heads,
        cfg.num_kv_heads,
        cfg.head_dim,
        cfg.vocab_size,
        cfg.max_positions,
        cfg.name,
    ) == ("bert", 384, 6, 12, 12, 32, 30522, 512, "minilm")
    assert cfg.raw["model_type"] == "bert"
    assert not minilm.training
    assert len(minilm.layers) == 6
    for i, layer in enumerate(minilm.layers):
        att = layer.attention
        assert isinstance(att, MultiHeadAttention)
        assert att.name == f"layers.{i}.attention"
        assert (att.num_heads, att.num_kv_heads, att.head_dim) == (12, 12, 32)
        assert att.out_proj.in_features == 12 * 32 and att.out_proj.out_features == 384
        for proj in (att.q_proj, att.k_proj, att.v_proj, att.out_proj):
            assert isinstance(proj, torch.nn.Linear)


def test_weights_equal_transformers(minilm, hf_minilm):
    """Spot-check the name map: q projection and the last LayerNorm are the checkpoint's tensors."""
    hf = dict(hf_minilm.named_parameters())
    torch.testing.assert_close(
        minilm.layers[3].attention.q_proj.weight, hf["encoder.layer.3.attention.self.query.weight"], rtol=0, atol=0
    )
    torch.testing.assert_close(
        minilm.layers[5].mlp_norm.bias, hf["encoder.layer.5.output.LayerNorm.bias"], rtol=0, atol=0
    )


def test_left_padding_matches_transformers(minilm, hf_minilm, batch):
    """A non-right-padded attention_mask takes the bool-tensor mask path; same answer as transformers."""
    ids, mask = batch
    n = int(mask[1].sum())
    left_ids = torch.cat([torch.zeros_like(ids[1:, n:]), ids[1:, :n]], dim=1)  # row 1 moved to the right
    left_mask = torch.cat([torch.zeros_like(mask[1:, n:]), mask[1:, :n]], dim=1)
    with torch.no_grad():
        a = minilm(left_ids, left_mask).last_hidden_state
        b = hf_minilm(input_ids=left_ids, attention_mask=left_mask).last_hidden_state
    valid = left_mask.bool()
    assert (a - b)[valid].abs().max().item() < 1e-5


def test_inference_mode_padded_batch(minilm, both, batch):
    """torch.inference_mode (what servers use) gives the same states as no_grad on a padded batch."""
    with torch.inference_mode():
        out = minilm(*batch)
    valid = batch[1].bool()
    assert (out.last_hidden_state - both[0].last_hidden_state)[valid].abs().max().item() < 1e-5
