"""qkv as a Hugging Face transformers attention backend (optional extra ``qkv[hf]``).

Importing this module registers ``"qkv"`` in ``transformers.AttentionInterface`` (the attention
function, :func:`qkv.hf.backend.attention_forward`) and in transformers' mask interface
(:func:`qkv.hf.masks.mask_interface`: the mask's *structure* -- causal, sliding window, padding -- as
:mod:`qkv.masks`, not a dense tensor)::

    import qkv.hf  # registers "qkv"
    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="qkv")
    trace = qkv.trace("The cat sat on the mat.", model=model, tokenizer=tokenizer)

Every attention call of the model then runs through :func:`qkv.attention`: GQA without repeating
K/V, sliding-window layers block-sparse, Gemma 2's soft-capping as ``qkv.mods.softcap``, padding as
``qkv.masks.padding``; ``scaling`` and ``dropout`` (training) honoured; weights returned when
``output_attentions=True``. Tested with transformers :data:`TESTED_TRANSFORMERS` (families in
:data:`TESTED_FAMILIES`). ``import qkv`` never imports transformers; this module does.
"""

from __future__ import annotations

try:
    import transformers as _transformers
except ImportError:  # pragma: no cover - depends on the environment
    raise ImportError(
        "qkv.hf needs Hugging Face transformers 5.x; install it with pip install 'qkv[hf]' "
        "(or pip install 'transformers>=5,<6')"
    ) from None

from .backend import attention_forward, layer_order
from .loading import HFModel, check_family, load, wrap
from .masks import mask_interface, recover
from .registration import NAME, register

__all__ = [
    "NAME",
    "register",
    "attention_forward",
    "mask_interface",
    "recover",
    "load",
    "wrap",
    "HFModel",
    "check_family",
    "layer_order",
    "TESTED_TRANSFORMERS",
    "TESTED_FAMILIES",
]

#: transformers versions the test-suite (tests/hf) runs against.
TESTED_TRANSFORMERS = ("5.24.0",)
#: Families tests/hf checks against eager transformers (logits, generate, weights).
TESTED_FAMILIES = ("bert", "roberta", "gpt2", "llama", "mistral", "qwen2", "gemma2", "phi3", "gpt_neox")

if int(_transformers.__version__.split(".")[0]) < 5:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"qkv.hf needs transformers>=5 (its mask interface), found {_transformers.__version__}; pip install 'qkv[hf]'"
    )


register()
