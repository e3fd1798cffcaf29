"""qkv.nn -- modules built on :func:`qkv.attention`: multi-head attention, KV cache, rotary embedding,
and the recording mechanism (:mod:`qkv.nn.record`) that makes every attention step observable."""

from . import record
from .attention import MultiHeadAttention
from .cache import KVCache
from .record import Recorder, current, recording
from .rope import RotaryEmbedding

__all__ = ["MultiHeadAttention", "KVCache", "RotaryEmbedding", "Recorder", "recording", "current", "record"]
