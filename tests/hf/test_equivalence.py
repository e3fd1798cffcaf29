"""attn_implementation="qkv" against transformers' own "eager" (the oracle) on tiny random models."""

import pytest
import torch

from .conftest import CAUSAL, FAMILIES, SLIDING, build, padded_batch, run

# Max errors seen on transformers 5.24.0 (fp32) are printed by `pytest -s` and quoted in the README.


@pytest.mark.parametrize("family", list(FAMILIES))
def test_logits_match_eager_on_a_padded_batch(family):
    model = build(family)
    left = family in CAUSAL  # decoders pad on the left (as for generate), encoders on the right
    ids, mask = padded_batch(left=left)
    eager = run(model, "eager", input_ids=ids, attention_mask=mask)
    ours = run(model, "qkv", input_ids=ids, attention_mask=mask)
    key = "logits" if hasattr(eager, "logits") else "last_hidden_state"
    a, b = getattr(ours, key), getattr(eager, key)
    real = mask.bool()  # padded positions carry no meaning (eager gives empty rows uniform weights, qkv zeros)
    err = (a - b)[real].abs().max().item()
    print(f"{family}: max |qkv - eager| {key} = {err:.2e}")
    assert err <= 1e-5, f"{family}: {key} differ by {err:.2e} > 1e-5"


@pytest.mark.parametrize("family", list(FAMILIES))
def test_returned_weights_match_eager_output_attentions(family):
    model = build(family)
    ids, mask = padded_batch(left=family in CAUSAL)
    eager = run(model, "eager", input_ids=ids, attention_mask=mask, output_attentions=True)
    ours = run(model, "qkv", input_ids=ids, attention_mask=mask, output_attentions=True)
    assert len(ours.attentions) == len(eager.attentions) == 2
    real = mask.bool()[:, None, :, None]  # rows of real queries
    for n, (a, b) in enumerate(zip(ours.attentions, eager.attentions)):
        assert a.shape == b.shape, f"layer {n}: weights {tuple(a.shape)} vs eager {tuple(b.shape)}"
        err = (a - b).masked_fill(~real, 0).abs().max().item()
        assert err <= 1e-6, f"{family} layer {n}: weights differ by {err:.2e}"


@pytest.mark.parametrize("family", CAUSAL)
@pytest.mark.parametrize("use_cache", [True, False])
def test_greedy_generate_is_identical(family, use_cache):
    model = build(family)
    ids, mask = padded_batch(seed=3, lengths=(6, 4), left=True)
    kw = dict(max_new_tokens=10, do_sample=False, use_cache=use_cache, pad_token_id=0)
    model.set_attn_implementation("eager")
    want = model.generate(input_ids=ids, attention_mask=mask, **kw)
    model.set_attn_implementation("qkv")
    got = model.generate(input_ids=ids, attention_mask=mask, **kw)
    assert torch.equal(got, want), f"{family} (use_cache={use_cache}): {got.tolist()} vs eager {want.tolist()}"


@pytest.mark.parametrize("family", SLIDING)
def test_sliding_window_layers_run_the_block_sparse_engine(family, spy_impls):
    model = build(family, lm=False)
    ids = torch.randint(3, 96, (1, 256))  # large enough that auto leaves the reference (>= 2**17 scores)
    model.config.sliding_window = 32
    eager = run(model, "eager", input_ids=ids).last_hidden_state
    spy_impls.clear()
    ours = run(model, "qkv", input_ids=ids).last_hidden_state
    assert (ours - eager).abs().max().item() <= 1e-5
    layer_types = getattr(model.config, "layer_types", None) or ["sliding_attention"] * 2
    sliding = [i for i, t in enumerate(layer_types) if t == "sliding_attention"]
    assert sliding, f"{family}: the config has no sliding layer"
    for i in sliding:
        assert spy_impls[i] == "tiled", f"{family} layer {i} ({layer_types[i]}) ran {spy_impls[i]!r}; ran {spy_impls}"
    for i, t in enumerate(layer_types):
        if t == "full_attention":  # plain causal: torch's fused SDPA kernel
            assert spy_impls[i] in ("sdpa", "tiled"), spy_impls


def test_dropout_in_training_is_applied_and_off_in_eval():
    model = build("llama")
    model.config.attention_dropout = 0.5
    for layer in model.model.layers:
        layer.self_attn.attention_dropout = 0.5
    ids = torch.randint(3, 96, (1, 12))
    model.set_attn_implementation("qkv")
    with torch.no_grad():
        ev = [model(input_ids=ids).logits for _ in range(2)]
        model.train()
        tr = [model(input_ids=ids).logits for _ in range(2)]
    assert torch.equal(ev[0], ev[1])
    assert not torch.allclose(tr[0], tr[1]), "dropout=0.5 in training changed nothing"


def test_scaling_is_honoured():
    model = build("gemma2")  # query_pre_attn_scalar=16 -> scaling 1/4, not 1/sqrt(head_dim=8)
    assert model.model.layers[0].self_attn.scaling == pytest.approx(0.25)
    ids = torch.randint(3, 96, (1, 10))
    a = run(model, "qkv", input_ids=ids).logits
    b = run(model, "eager", input_ids=ids).logits
    assert (a - b).abs().max().item() <= 1e-5
