"""Loading a transformers model for qkv, offline, and checking that its attention reaches the backend.

:func:`load` resolves a directory or a hub id in the local Hugging Face cache (never downloads; the same
resolution as :func:`qkv.models.load`), checks that the family's attention goes through
``transformers.AttentionInterface`` (:func:`check_family`) and loads it with
``attn_implementation="qkv"`` in eval mode, with a tokenizer when the directory has one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["HFModel", "load", "check_family", "wrap"]


@dataclass
class HFModel:
    """A transformers model with what a trace needs.

    Attributes:
        model: the ``PreTrainedModel`` (attention running through the ``"qkv"`` backend).
        tokenizer: a transformers tokenizer, a :class:`qkv.models.tokenizer.Tokenizer`, or None.
        name: the name the user gave (shown in traces).
    """

    model: Any
    tokenizer: Any
    name: str

    @property
    def config(self):
        return self.model.config


def check_family(model_or_class) -> None:
    """Raise a ValueError naming the family when its attention does not go through ``AttentionInterface``."""
    cls = model_or_class if isinstance(model_or_class, type) else type(model_or_class)
    if getattr(cls, "_supports_attention_backend", False):
        return
    config = getattr(model_or_class, "config", None) or getattr(cls, "config_class", None)
    family = getattr(config, "model_type", None) or cls.__name__
    raise ValueError(
        f"{family} ({cls.__name__}) computes attention in its own modeling code, not through "
        "transformers.AttentionInterface, so qkv cannot run or record it; families that route through "
        "it include bert, roberta, gpt2, llama, mistral, qwen2, gemma2, phi3 and gpt_neox "
        "(their Model class has _supports_attention_backend = True); for this one load it with "
        "attn_implementation='eager' and read output_attentions=True"
    )


def wrap(model, tokenizer=None, name: str | None = None) -> HFModel:
    """An :class:`HFModel` for a loaded transformers model, switched to the ``"qkv"`` backend.

    The model's attention implementation is set to ``"qkv"`` (``model.set_attn_implementation``) when it
    is anything else; it is not changed back (the computation is the same up to float rounding).
    """
    from .registration import register

    register()
    check_family(model)
    if getattr(model.config, "_attn_implementation", None) != "qkv":
        model.set_attn_implementation("qkv")
    name = name or getattr(model.config, "_name_or_path", "") or model.config.model_type
    return HFModel(model, tokenizer, str(name))


def load(name_or_path: str | os.PathLike, *, dtype=None, device=None) -> HFModel:
    """Load ``name_or_path`` (a directory or a cached hub id) with ``AutoModel`` and the ``"qkv"`` backend,
    in ``dtype`` (default float32) on ``device`` (default CPU).

    Raises:
        ValueError: not a directory and not in the local cache (nothing is downloaded), no config.json,
            or a family whose attention does not go through ``AttentionInterface``.
    """
    import torch
    from transformers import AutoConfig, AutoModel

    from ..models.loading import resolve
    from .registration import register

    register()
    directory = Path(resolve(name_or_path))
    if not (directory / "config.json").is_file():
        raise ValueError(
            f"{directory / 'config.json'} is missing; point at the directory that holds the "
            "checkpoint's config.json (save it with save_pretrained())"
        )
    config = AutoConfig.from_pretrained(directory, local_files_only=True)
    try:
        from transformers.models.auto.modeling_auto import MODEL_MAPPING

        cls = MODEL_MAPPING[type(config)]
    except KeyError:
        raise ValueError(
            f"{directory}: transformers has no AutoModel class for model_type {config.model_type!r}"
        ) from None
    check_family(cls)
    model = AutoModel.from_pretrained(
        directory, attn_implementation="qkv", local_files_only=True, dtype=dtype or torch.float32
    )
    if device is not None:
        model = model.to(device)
    return HFModel(model.eval(), _tokenizer(directory, model.config), os.fspath(name_or_path))


#: Files from which transformers' AutoTokenizer builds a tokenizer (besides tokenizer.json, read by qkv).
TOKENIZER_FILES = (
    "tokenizer_config.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
)


def _tokenizer(directory: Path, config):
    """qkv's own tokenizer for ``tokenizer.json`` (the same tokens as the native loaders), else transformers'
    AutoTokenizer from the directory's tokenizer files, else None (no tokenizer files: a trace then says how
    to pass one).

    Raises:
        ValueError: the directory has tokenizer files that cannot be loaded (the cause is kept, chained).
    """
    if (directory / "tokenizer.json").is_file():
        from ..models.tokenizer import Tokenizer

        limit = getattr(config, "max_position_embeddings", None) or 1 << 20
        return Tokenizer(directory / "tokenizer.json", limit, getattr(config, "pad_token_id", None))
    present = [name for name in TOKENIZER_FILES if (directory / name).is_file()]
    if not present:
        return None
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(directory, local_files_only=True)
    except Exception as e:  # transformers, tokenizers and sentencepiece raise many kinds: keep the cause
        raise ValueError(
            f"{directory} has tokenizer files ({', '.join(present)}) but transformers cannot load them "
            f"({type(e).__name__}: {e}); restore the checkpoint's original tokenizer files, or load the model "
            "with transformers and pass tokenizer= to qkv.trace"
        ) from e
