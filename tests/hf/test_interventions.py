"""Interventions through qkv.hf on tiny transformers models of several families: zero-ablating a head and patching
a head's output from another run equal the same edit of the output projection's input in eager transformers (a
forward pre-hook, the oracle); knockout and swaps hold through the backend too."""

import pytest
import torch

import qkv
from qkv import lens

from .conftest import build
from .test_hooks import O_PROJ

HEAD, D = 2, 8
TEXT_A, TEXT_B = "the cat sat on it", "the dog lay on it"  # one id per character: same length


def _eager_final(model, ids, path, pre=None, keep=None):
    handles = []
    if pre is not None:
        handles.append(model.get_submodule(path).register_forward_pre_hook(pre))
    if keep is not None:
        handles.append(model.get_submodule(path).register_forward_pre_hook(lambda _m, args: keep.append(args[0])))
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            return model(input_ids=ids).last_hidden_state[0]
    finally:
        for h in handles:
            h.remove()


def _replace(value):
    def pre(_module, args):
        x = args[0].clone()
        x[..., HEAD * D : (HEAD + 1) * D] = value
        return (x,)

    return pre


@pytest.mark.parametrize("family", list(O_PROJ))
def test_zero_ablation_and_patching_equal_the_pre_hook_edit(family, char_tokenizer):
    model = build(family, lm=False)
    ids_a, ids_b = (torch.tensor([char_tokenizer(t)["input_ids"]]) for t in (TEXT_A, TEXT_B))
    want_zero = _eager_final(model, ids_a, O_PROJ[family], pre=_replace(0))
    seen: list = []
    _eager_final(model, ids_b, O_PROJ[family], keep=seen)
    want_patch = _eager_final(model, ids_a, O_PROJ[family], pre=_replace(seen[0][..., HEAD * D : (HEAD + 1) * D]))
    plain = qkv.trace(TEXT_A, model=model, tokenizer=char_tokenizer)
    zero = qkv.trace(TEXT_A, model=model, tokenizer=char_tokenizer, interventions=[lens.ablate(1, HEAD)])
    source = qkv.trace(TEXT_B, model=model, tokenizer=char_tokenizer)
    patched = qkv.trace(TEXT_A, model=model, tokenizer=char_tokenizer, interventions=[lens.patch(source, 1, HEAD)])
    torch.testing.assert_close(zero.final, want_zero, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(patched.final, want_patch, atol=1e-5, rtol=1e-5)
    assert (zero.final - plain.final).abs().max() > 1e-4 and (patched.final - plain.final).abs().max() > 1e-4
    assert torch.equal(qkv.trace(TEXT_A, model=model, tokenizer=char_tokenizer).final, plain.final)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_knockout_and_swaps_through_the_backend(family, char_tokenizer):
    model = build(family, lm=False)
    base = qkv.trace(TEXT_A, model=model, tokenizer=char_tokenizer)
    q, k1, k2 = len(base) - 1, 1, 2  # causal: the last query sees both keys
    t = qkv.trace(
        TEXT_A, model=model, tokenizer=char_tokenizer, interventions=[lens.knockout(1, 0, query=q, keys=[k1])]
    )
    assert t.weights[1, 0, q, k1] == 0 and abs(float(t.weights[1, 0, q].sum()) - 1) < 1e-6
    assert torch.equal(t.weights[1, 1:], base.weights[1, 1:])
    tv = qkv.trace(TEXT_A, model=model, tokenizer=char_tokenizer, interventions=[lens.swap(1, "v", (k1, k2))])
    assert torch.equal(tv.weights[1], base.weights[1]) and not torch.equal(tv.output[1], base.output[1])
    tk = qkv.trace(TEXT_A, model=model, tokenizer=char_tokenizer, interventions=[lens.swap(1, "k", (k1, k2), head=0)])
    group = base.num_heads // base.k.shape[1]  # query heads reading kv head 0
    torch.testing.assert_close(tk.scores[1, :group, q, k1], base.scores[1, :group, q, k2], atol=1e-5, rtol=0)
    assert torch.equal(tk.scores[1, group:], base.scores[1, group:])


def test_logit_difference_of_a_causal_lm_equals_eager_with_the_pre_hook(char_tokenizer):
    import qkv.hf

    model = build("gpt2", lm=True)
    ids = torch.tensor([char_tokenizer(TEXT_A)["input_ids"]])
    model.set_attn_implementation("eager")
    handle = model.get_submodule("transformer.h.1.attn.c_proj").register_forward_pre_hook(_replace(0))
    try:
        with torch.no_grad():
            ablated = model(input_ids=ids).logits[0, -1]
    finally:
        handle.remove()
    with torch.no_grad():
        plain = model(input_ids=ids).logits[0, -1]
    e = lens.effect(TEXT_A, [lens.ablate(1, HEAD)], lens.logit_diff(5, 7), qkv.hf.wrap(model, char_tokenizer))
    assert e.metric == "logit_diff" and e.how == "zero"
    assert abs(e.base - float(plain[5] - plain[7])) < 1e-4 and abs(e.value - float(ablated[5] - ablated[7])) < 1e-4
    with pytest.raises(ValueError, match="out of range"):
        lens.effect(TEXT_A, [], lens.logit_diff(5, 10_000), qkv.hf.wrap(model, char_tokenizer))
