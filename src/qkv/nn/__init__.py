"""qkv.nn -- modules built on :func:`qkv.attention`: multi-head attention, KV cache, rotary embedding,
and the hook points (:mod:`qkv.nn.hooks`, recorded by :mod:`qkv.nn.record`) that make every attention step
observable and writable."""

from . import record
from .attention import MultiHeadAttention
from .cache import KVCache
from .hooks import Hooks, hooks
from .record import Recorder, current, recording
from .rope import RotaryEmbedding

__all__ = [
    "MultiHeadAttention",
    "KVCache",
    "RotaryEmbedding",
    "Hooks",
    "hooks",
    "Recorder",
    "recording",
    "current",
    "record",
]
