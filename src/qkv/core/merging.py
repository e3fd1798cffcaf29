"""Merging partial attention states computed over disjoint key sets (split-KV, KV cache, ring).

For parts ``(out_i, lse_i)`` over key sets ``K_i``, the attention over the union is

    lse = log(sum_i exp(lse_i))
    out = sum_i exp(lse_i - lse) * out_i

computed in float32 with the max-shift trick; parts with ``lse = -inf`` (no key attended) are
neutral, and rows where every part is empty give ``out = 0``, ``lse = -inf`` -- never NaN.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import torch
from torch import Tensor

from .lse import lse_dtype, stable_exp

__all__ = ["merge"]


_HOW = "pass a list of attention(..., return_lse=True) results, e.g. merge([a, b])"


def _describe(x: object) -> str:
    return f"a tensor of shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__


def _check_parts(parts: Any) -> list[tuple[Tensor, Tensor]]:
    """``parts`` as a list of ``(out, lse)`` tensor pairs, or ``ValueError`` saying what arrived."""
    if isinstance(parts, (tuple, list)) and len(parts) == 2 and all(isinstance(x, Tensor) for x in parts):
        raise ValueError(
            f"merge expects a list of (out, lse) pairs, got one pair (out {tuple(parts[0].shape)}, lse "
            f"{tuple(parts[1].shape)}); wrap the pairs in a list: merge([a, b])"
        )
    if isinstance(parts, (Tensor, str, bytes, dict)) or not isinstance(parts, Iterable):
        raise ValueError(f"merge expects a list of (out, lse) pairs, got {_describe(parts)}; {_HOW}")
    parts = list(parts)
    if not parts:
        raise ValueError(f"merge needs at least one (out, lse) part, got an empty list; {_HOW}")
    for i, part in enumerate(parts):
        if not (isinstance(part, (tuple, list)) and len(part) == 2 and all(isinstance(x, Tensor) for x in part)):
            got = (
                f"a {type(part).__name__} of {', '.join(_describe(x) for x in part)}"
                if isinstance(part, (tuple, list))
                else _describe(part)
            )
            raise ValueError(f"part {i}: expected a pair (out, lse) of tensors, got {got}; {_HOW}")
    device = parts[0][0].device
    if any(t.device != device for part in parts for t in part):
        devices = sorted({str(t.device) for part in parts for t in part})
        raise ValueError(
            f"merge expects every part on one device, got {', '.join(devices)}; move them with .to(device)"
        )
    checked: list[tuple[Tensor, Tensor]] = parts  # every part checked above
    return checked


def merge(parts: Sequence[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """Combine ``[(out_i (B, H, L, Dv), lse_i (B, H, L)), ...]`` into the exact ``(out, lse)`` of the union.

    Differentiable; ``out`` keeps the dtype of the first part, ``lse`` is float32 (float64 for float64).

    Example:
        >>> import torch, qkv
        >>> q, k, v = (torch.randn(1, 2, 3, 4, dtype=torch.float64) for _ in range(3))
        >>> whole = qkv.attention(q, k, v, return_lse=True)
        >>> a = qkv.attention(q, k[:, :, :1], v[:, :, :1], return_lse=True)
        >>> b = qkv.attention(q, k[:, :, 1:], v[:, :, 1:], return_lse=True)
        >>> out, lse = qkv.merge([a, b])
        >>> bool(torch.allclose(out, whole[0]) and torch.allclose(lse, whole[1]))
        True
    """
    parts = _check_parts(parts)
    out0, lse0 = parts[0]
    for i, (o, part_lse) in enumerate(parts):
        if o.dim() != 4 or part_lse.shape != o.shape[:-1]:
            raise ValueError(
                f"part {i}: expected out (B, H, L, Dv) and lse (B, H, L), got out {tuple(o.shape)} "
                f"and lse {tuple(part_lse.shape)}; pass the result of attention(..., return_lse=True)"
            )
        if o.shape != out0.shape:
            raise ValueError(
                f"part {i} has out shape {tuple(o.shape)} but part 0 has {tuple(out0.shape)}; "
                "every part must cover the same queries"
            )
    acc = lse_dtype(out0.dtype)
    lses = torch.stack([part_lse.to(acc) for _, part_lse in parts])  # (P, B, H, L)
    p, total, lse = stable_exp(lses, dim=0)
    w = p / total  # (P, B, H, L); 0 for empty parts
    out = w[0, ..., None] * out0.to(acc)
    for i, (o, _) in enumerate(parts[1:], start=1):
        out = out + w[i, ..., None] * o.to(acc)
    return out.to(out0.dtype), lse
