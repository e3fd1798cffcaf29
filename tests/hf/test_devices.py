"""attn_implementation="qkv" on every available device (``device`` fixture) against transformers' "eager" on the
same device: tiny random decoders with padding and a sliding window (on CUDA: the flex engine's path)."""

import pytest

from .conftest import build, padded_batch, run


@pytest.mark.parametrize("family", ["llama", "mistral"])
def test_logits_match_eager_on_device(device, family):
    model = build(family).to(device)
    ids, mask = padded_batch(left=True)
    ids, mask = ids.to(device), mask.to(device)
    eager = run(model, "eager", input_ids=ids, attention_mask=mask).logits
    ours = run(model, "qkv", input_ids=ids, attention_mask=mask).logits
    assert ours.device.type == device.type
    real = mask.bool()
    err = (ours - eager)[real].abs().max().item()
    assert err <= 1e-4, f"{family} on {device}: logits differ by {err:.2e}"


def test_qkv_hf_load_on_device(device, tmp_path):
    import qkv.hf

    model = build("llama", lm=False)
    model.save_pretrained(str(tmp_path), safe_serialization=True)
    loaded = qkv.hf.load(tmp_path, device=device)
    assert {p.device.type for p in loaded.model.parameters()} == {device.type}
