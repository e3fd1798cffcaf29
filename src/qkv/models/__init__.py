"""qkv.models -- real model families whose attention is :func:`qkv.attention`.

``load("minilm")`` (the default, sentence-transformers/all-MiniLM-L6-v2), a checkpoint directory or a
cached hub id -> an eval-mode ``nn.Module`` with ``.config``, ``.tokenizer`` and ``.layers[i].attention``
(a :class:`qkv.nn.MultiHeadAttention` named ``layers.{i}.attention``). Families: BERT-style encoders,
GPT-2, Llama. transformers is never imported.

Example:
    >>> import torch, qkv.models
    >>> model = qkv.models.load("minilm")
    >>> ids, mask = model.tokenizer.encode_batch(["The cat sat on the mat.", "It was tired."])
    >>> out = model(ids, mask)
    >>> out.last_hidden_state.shape, out.pooled.shape
    (torch.Size([2, 9, 384]), torch.Size([2, 384]))
"""

from .bert import BertModel
from .common import CausalLMOutput, EncoderOutput
from .config import ModelConfig, WeightRule
from .gpt2 import GPT2Model
from .llama import LlamaModel
from .loading import known_model_types, load, resolve
from .tokenizer import Encoding, Tokenizer

__all__ = [
    "load",
    "resolve",
    "known_model_types",
    "ModelConfig",
    "WeightRule",
    "Tokenizer",
    "Encoding",
    "EncoderOutput",
    "CausalLMOutput",
    "BertModel",
    "GPT2Model",
    "LlamaModel",
]
