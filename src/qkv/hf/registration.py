"""Registering ``"qkv"`` in transformers' attention and mask interfaces (done by ``import qkv.hf``).

Here rather than in the package so that :mod:`qkv.hf.loading` can register without importing its own facade.
"""

from __future__ import annotations

from .backend import attention_forward
from .masks import mask_interface

__all__ = ["NAME", "register"]

#: The ``attn_implementation`` name.
NAME = "qkv"


def register() -> None:
    """Register ``"qkv"`` in transformers' attention and mask interfaces (idempotent; done on import)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(NAME, attention_forward)
    AttentionMaskInterface.register(NAME, mask_interface)
