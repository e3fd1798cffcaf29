"""Rotary position embedding (RoPE, Su et al. 2021), Llama-style ("rotate half").

Each pair of dims ``(i, i + D/2)`` of a query/key at position ``p`` is rotated by the angle
``p * inv_freq[i]`` with ``inv_freq[i] = theta ** (-2i / D)``. A rotation by ``p_q`` on the query
and by ``p_k`` on the key makes their dot product depend on ``p_q - p_k`` only: relative position
enters the scores ``q . k`` without any additive position vector.

Shape legend: ``B`` batch, ``H`` heads, ``L`` length, ``D`` head dim.

Example:
    >>> import torch
    >>> from qkv.nn import RotaryEmbedding
    >>> rope = RotaryEmbedding(4)
    >>> q = torch.ones(1, 1, 1, 4); k = torch.ones(1, 1, 1, 4)
    >>> s1 = rope(q, torch.tensor([5])) @ rope(k, torch.tensor([3])).transpose(-2, -1)
    >>> s2 = rope(q, torch.tensor([12])) @ rope(k, torch.tensor([10])).transpose(-2, -1)
    >>> torch.allclose(s1, s2, atol=1e-5)   # only the distance 2 matters
    True
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["RotaryEmbedding", "rope_frequencies", "rotate_half", "ROPE_TYPES"]

ROPE_TYPES = ("default", "linear", "llama3")


def rope_frequencies(
    head_dim: int, theta: float = 10000.0, scaling: dict | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Inverse frequencies ``(D/2,)`` in ``dtype``, with optional ``rope_scaling`` (Hugging Face keys).

    float32 reproduces Hugging Face's numbers bit for bit; float64 is used for float64 inputs.

    Args:
        head_dim: ``D`` (even).
        theta: the base (``rope_theta``).
        scaling: ``None``/``{"rope_type": "default"}``; ``{"rope_type": "linear", "factor": f}``
            (positions divided by ``f``); ``{"rope_type": "llama3", "factor", "low_freq_factor",
            "high_freq_factor", "original_max_position_embeddings"}`` (Llama 3.1).
    """
    if not isinstance(head_dim, int) or head_dim <= 0 or head_dim % 2:
        raise ValueError(
            f"RotaryEmbedding: head_dim must be a positive even int (dims rotate in pairs), got {head_dim!r}"
        )
    if not (isinstance(theta, (int, float)) and math.isfinite(theta) and theta > 0):
        raise ValueError(
            f"RotaryEmbedding: theta (rope_theta) must be a positive number, got {theta!r}; Llama uses 10000.0"
        )
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64, device="cpu").to(dtype) / head_dim))
    kind = (scaling or {}).get("rope_type", (scaling or {}).get("type", "default"))
    if kind == "default":
        return inv_freq
    if kind not in ROPE_TYPES:
        raise ValueError(
            f"RotaryEmbedding: rope_scaling type {kind!r} is not supported; known: {', '.join(ROPE_TYPES)}. "
            "Remove rope_scaling from config.json to use plain RoPE (exact only within the trained length)"
        )
    try:
        factor = float(scaling["factor"])
        if kind == "linear":
            return inv_freq / factor
        low, high = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
        old_len = float(scaling["original_max_position_embeddings"])
    except KeyError as e:
        raise ValueError(
            f"RotaryEmbedding: rope_scaling {scaling} of type {kind!r} lacks the key {e.args[0]!r}; "
            "copy the rope_scaling block from the model's original config.json"
        ) from None
    # llama3: keep high frequencies, divide low ones by `factor`, interpolate in between.
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
    return torch.where(medium, smoothed, scaled)


def rotate_half(x: Tensor) -> Tensor:
    """``(x1, x2) -> (-x2, x1)`` on the two halves of the last dim."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class RotaryEmbedding(nn.Module):
    """Rotates queries/keys by their positions: ``x * cos + rotate_half(x) * sin``.

    Args:
        head_dim: ``D``, the per-head dim (even).
        theta: the base (``rope_theta``; Llama 2: 10000, Llama 3: 500000).
        scaling: optional ``rope_scaling`` dict (see :func:`rope_frequencies`).

    Call ``rope(x, positions)`` with x ``(B, H, L, D)`` and integer positions ``(L,)`` or ``(B, L)``;
    the angles are computed in float32 (float64 for float64 x) and the result has x's dtype.
    """

    def __init__(self, head_dim: int, *, theta: float = 10000.0, scaling: dict | None = None):
        super().__init__()
        self.head_dim, self.theta, self.scaling = head_dim, float(theta), scaling
        self._inv_freq = rope_frequencies(head_dim, theta, scaling)  # (D/2,) plain tensor (not in state_dict)
        self._inv_freq64 = rope_frequencies(head_dim, theta, scaling, torch.float64)
        self._cached: tuple | None = None  # (positions copy, dtype, cos, sin, positions, version): reused across layers
        self._on: dict = {}  # (dtype, device) -> inverse frequencies there: copied to a device once, not per call

    def cos_sin(self, positions: Tensor, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
        """``cos, sin`` of shape ``(L, D)`` or ``(B, 1, L, D)`` (broadcast over heads)."""
        if not isinstance(positions, Tensor) or positions.dtype.is_floating_point or positions.dim() not in (1, 2):
            got = (
                f"{positions.dtype} {tuple(positions.shape)}"
                if isinstance(positions, Tensor)
                else type(positions).__name__
            )
            raise ValueError(
                f"RotaryEmbedding: positions must be an integer tensor (L,) or (B, L), got {got}; "
                "pass e.g. torch.arange(L)"
            )
        if torch.compiler.is_compiling():  # traced: the graph computes cos/sin once per forward anyway
            return self._cos_sin(positions, dtype)
        c = self._cached
        version = None if positions.is_inference() else positions._version  # inference tensors have none
        if c is not None and c[4] is positions and version is not None and c[5] == version and c[1] == dtype:
            return c[2], c[3]  # the same positions tensor, unchanged (every layer of one forward)
        if (
            c is not None
            and c[1] == dtype
            and c[0].shape == positions.shape
            and c[0].device == positions.device
            and torch.equal(c[0], positions)
        ):  # O(L) check; works for inference tensors too
            self._cached = (*c[:4], positions, version)
            return c[2], c[3]
        cos, sin = self._cos_sin(positions, dtype)
        self._cached = (positions.clone(), dtype, cos, sin, positions, version)
        return cos, sin

    def _cos_sin(self, positions: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        inv = self._frequencies(torch.float64 if dtype == torch.float64 else torch.float32, positions.device)
        freqs = positions.to(inv.dtype).unsqueeze(-1) * inv  # (..., L, D/2)
        emb = torch.cat((freqs, freqs), dim=-1)  # (..., L, D)
        cos, sin = emb.cos().to(dtype), emb.sin().to(dtype)
        if positions.dim() == 2:
            cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # (B, 1, L, D)
        return cos, sin

    def _frequencies(self, dtype: torch.dtype, device: torch.device) -> Tensor:
        """The inverse frequencies ``(D/2,)`` in ``dtype`` on ``device`` (copied there on first use)."""
        if torch.compiler.is_compiling():  # traced: no cache writes inside a graph
            return (self._inv_freq64 if dtype == torch.float64 else self._inv_freq).to(device)
        key = (dtype, device)
        if key not in self._on:
            self._on[key] = (self._inv_freq64 if dtype == torch.float64 else self._inv_freq).to(device)
        return self._on[key]

    def forward(self, x: Tensor, positions: Tensor) -> Tensor:
        """Rotate ``x`` ``(B, H, L, D)`` by ``positions`` ``(L,)`` or ``(B, L)``."""
        if x.dim() != 4 or x.shape[-1] != self.head_dim:
            raise ValueError(f"RotaryEmbedding: expected x of shape (B, H, L, {self.head_dim}), got {tuple(x.shape)}")
        if positions.shape[-1] != x.shape[2]:
            raise ValueError(
                f"RotaryEmbedding: {positions.shape[-1]} positions for length {x.shape[2]}; give one position per token"
            )
        cos, sin = self.cos_sin(positions, x.dtype)
        return x * cos + rotate_half(x) * sin

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, theta={self.theta}, scaling={self.scaling}"
