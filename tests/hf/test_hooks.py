"""Hook points through the transformers backend: replacing one head's ``output`` in one layer changes the last
hidden state exactly as replacing the same columns of that layer's output-projection input in eager transformers
(a forward pre-hook, the oracle); no hook -> bitwise the plain qkv forward."""

import pytest
import torch

from qkv.lens.loading import adapt
from qkv.nn import Hooks, hooks

from .conftest import build, padded_batch

#: family -> path of layer 1's attention output projection (its input is the concatenated head outputs)
O_PROJ = {
    "bert": "encoder.layer.1.attention.output.dense",
    "gpt2": "h.1.attn.c_proj",
    "llama": "layers.1.self_attn.o_proj",
    "mistral": "layers.1.self_attn.o_proj",
    "gemma2": "layers.1.self_attn.o_proj",
    "gpt_neox": "layers.1.attention.dense",
}
HEAD, D = 2, 8


def _zero_columns(_module, args):
    x = args[0].clone()
    x[..., HEAD * D : (HEAD + 1) * D] = 0
    return (x,)


def _zero_head(t, name):
    t = t.clone()
    t[:, HEAD] = 0
    return t


@pytest.mark.parametrize("family", list(O_PROJ))
def test_head_output_hook_equals_a_pre_hook_on_the_output_projection(family):
    import qkv.hf

    model = build(family, lm=False)
    ids, _ = padded_batch(lengths=(9, 9))
    handle = model.get_submodule(O_PROJ[family]).register_forward_pre_hook(_zero_columns)
    try:
        with torch.no_grad():
            want = model(input_ids=ids).last_hidden_state
    finally:
        handle.remove()
    adapter = adapt(qkv.hf.wrap(model, None))
    with torch.no_grad():
        plain = adapter.forward(ids, None).final
        with hooks(Hooks().add("layers.1.attention.output", _zero_head)):
            got = adapter.forward(ids, None).final
        again = adapter.forward(ids, None).final
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert (got - plain).abs().max() > 1e-4  # the edit matters
    assert torch.equal(again, plain)  # nothing stays installed
