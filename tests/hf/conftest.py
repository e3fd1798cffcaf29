"""Fixtures for qkv.hf: tiny random transformers models of each family (built offline), an eager oracle
and ONE spy on qkv's dispatcher (re-point :func:`spy_impls` if the dispatcher moves)."""

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

transformers = pytest.importorskip("transformers")

import qkv.hf  # noqa: E402,F401  (registers "qkv")

VOCAB = 96
_COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=128,
)

#: family -> (config class, causal LM class or None, base/encoder class, config kwargs)
FAMILIES = {
    "bert": ("BertConfig", None, "BertModel", dict(_COMMON, type_vocab_size=2)),
    "roberta": (
        "RobertaConfig",
        None,
        "RobertaModel",
        dict(_COMMON, pad_token_id=1, type_vocab_size=1, max_position_embeddings=130),
    ),
    "gpt2": (
        "GPT2Config",
        "GPT2LMHeadModel",
        "GPT2Model",
        dict(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=128),
    ),
    "llama": ("LlamaConfig", "LlamaForCausalLM", "LlamaModel", dict(_COMMON, num_key_value_heads=2)),
    "mistral": (
        "MistralConfig",
        "MistralForCausalLM",
        "MistralModel",
        dict(_COMMON, num_key_value_heads=2, sliding_window=5),
    ),
    "qwen2": (
        "Qwen2Config",
        "Qwen2ForCausalLM",
        "Qwen2Model",
        dict(
            _COMMON,
            num_key_value_heads=2,
            use_sliding_window=True,
            sliding_window=5,
            max_window_layers=1,
            layer_types=["full_attention", "sliding_attention"],
        ),
    ),
    "gemma2": (
        "Gemma2Config",
        "Gemma2ForCausalLM",
        "Gemma2Model",
        dict(
            _COMMON,
            num_key_value_heads=2,
            head_dim=8,
            sliding_window=5,
            attn_logit_softcapping=3.0,
            final_logit_softcapping=30.0,
            query_pre_attn_scalar=16,
        ),
    ),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", "Phi3Model", dict(_COMMON, num_key_value_heads=2, pad_token_id=0)),
    "gpt_neox": ("GPTNeoXConfig", "GPTNeoXForCausalLM", "GPTNeoXModel", dict(_COMMON, rotary_pct=0.5)),
}
CAUSAL = [f for f, spec in FAMILIES.items() if spec[1]]
SLIDING = ["mistral", "qwen2", "gemma2"]


def build(family: str, *, lm: bool = True, seed: int = 0):
    """A tiny random model of ``family`` in eval mode with attn_implementation "eager" (fp32)."""
    cfg_cls, lm_cls, base_cls, kwargs = FAMILIES[family]
    torch.manual_seed(seed)
    config = getattr(transformers, cfg_cls)(**kwargs)
    cls = getattr(transformers, lm_cls if lm and lm_cls else base_cls)
    model = cls(config).eval()
    model.set_attn_implementation("eager")
    return model


def padded_batch(seed: int = 1, lengths=(11, 7, 9), left: bool = True, vocab: int = VOCAB):
    """``(input_ids (B, L), attention_mask (B, L))`` with padding on the left (causal LMs) or right."""
    g = torch.Generator().manual_seed(seed)
    L = max(lengths)
    ids = torch.randint(3, vocab, (len(lengths), L), generator=g)
    mask = torch.zeros(len(lengths), L, dtype=torch.long)
    for b, n in enumerate(lengths):
        if left:
            mask[b, L - n :] = 1
        else:
            mask[b, :n] = 1
    return ids, mask


def run(model, impl: str, **inputs):
    model.set_attn_implementation(impl)
    with torch.no_grad():
        return model(**inputs)


@pytest.fixture
def spy_impls(monkeypatch):
    """A list that collects ``.name`` of every implementation qkv's dispatcher selects."""
    from qkv.core import registry

    chosen = []
    original = registry.select

    def select(name, inp):
        impl = original(name, inp)
        chosen.append(impl.name)
        return impl

    monkeypatch.setattr(registry, "select", select)
    return chosen
