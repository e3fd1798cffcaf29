"""A key/value cache for incremental (token-by-token) decoding.

Decoding one new token needs the keys and values of *every* earlier token; recomputing them is
wasted work because they never change. The cache keeps them: each step appends the new tokens'
``k, v`` and attends over everything so far. The new queries are the *last* positions, so the
causal mask must be aligned bottom-right (``qkv.masks.causal(align="bottom_right")``)::

    step with 1 new query, 4 cached keys + 1 new:   k 0 1 2 3 4
                                                  q4  ■ ■ ■ ■ ■

Shape legend: ``B`` batch, ``Hkv`` key/value heads, ``L`` length, ``D``/``Dv`` head dims.

Example:
    >>> import torch
    >>> from qkv.nn import KVCache
    >>> cache = KVCache()
    >>> k, v = cache.append(torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 4))
    >>> k, v = cache.append(torch.ones(1, 2, 1, 4), torch.ones(1, 2, 1, 4))
    >>> len(cache), tuple(k.shape), k[0, 0, :, 0].tolist()
    (4, (1, 2, 4, 4), [0.0, 0.0, 0.0, 1.0])
"""

from __future__ import annotations

from torch import Tensor

__all__ = ["KVCache"]


class KVCache:
    """Keys ``(B, Hkv, L, D)`` and values ``(B, Hkv, L, Dv)`` of one attention module, grown by appending.

    Storage grows by doubling, so ``n`` single-token appends cost ``O(n)`` copies in total (not
    ``O(n^2)`` as repeated ``torch.cat`` would).

    Args:
        capacity: initial number of positions to reserve (grows as needed).
    """

    def __init__(self, capacity: int = 0):
        self._k: Tensor | None = None
        self._v: Tensor | None = None
        self._length = 0
        self._capacity = max(int(capacity), 0)

    def __len__(self) -> int:
        return self._length

    @property
    def keys(self) -> Tensor | None:
        """Cached keys ``(B, Hkv, L, D)`` (a view), or None when empty."""
        return None if self._k is None else self._k[:, :, : self._length]

    @property
    def values(self) -> Tensor | None:
        """Cached values ``(B, Hkv, L, Dv)`` (a view), or None when empty."""
        return None if self._v is None else self._v[:, :, : self._length]

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Append new ``k`` ``(B, Hkv, Ln, D)`` and ``v`` ``(B, Hkv, Ln, Dv)``; return all keys and values so far."""
        if k.dim() != 4 or v.dim() != 4 or k.shape[:3] != v.shape[:3]:
            raise ValueError(
                f"KVCache.append: expected k (B, Hkv, L, D) and v (B, Hkv, L, Dv) with matching B, Hkv, L; "
                f"got k {tuple(k.shape)}, v {tuple(v.shape)}"
            )
        n = k.shape[2]
        if self._k is None or self._v is None:
            cap = max(self._capacity, n)
            self._k = k.new_empty(k.shape[0], k.shape[1], cap, k.shape[3])
            self._v = v.new_empty(v.shape[0], v.shape[1], cap, v.shape[3])
        else:
            want_k = (self._k.shape[0], self._k.shape[1], self._k.shape[3])
            want_v = (self._v.shape[0], self._v.shape[1], self._v.shape[3])
            if (k.shape[0], k.shape[1], k.shape[3]) != want_k or (v.shape[0], v.shape[1], v.shape[3]) != want_v:
                raise ValueError(
                    f"KVCache.append: cache holds (B, Hkv, D) = {want_k} and Dv = {want_v[2]}, but got "
                    f"k {tuple(k.shape)}, v {tuple(v.shape)}; use one cache per attention module and batch"
                )
            if k.dtype != self._k.dtype or k.device != self._k.device:
                raise ValueError(
                    f"KVCache.append: cache is {self._k.dtype} on {self._k.device}, got k {k.dtype} on "
                    f"{k.device}; keep one dtype/device per cache (or reset() it)"
                )
            if self._length + n > self._k.shape[2]:
                cap = max(2 * self._k.shape[2], self._length + n)
                self._k = self._grow(self._k, cap)
                self._v = self._grow(self._v, cap)
        self._k[:, :, self._length : self._length + n] = k
        self._v[:, :, self._length : self._length + n] = v
        self._length += n
        return self._k[:, :, : self._length], self._v[:, :, : self._length]

    def _grow(self, buf: Tensor, cap: int) -> Tensor:
        new = buf.new_empty(buf.shape[0], buf.shape[1], cap, buf.shape[3])  # (B, Hkv, cap, D)
        new[:, :, : self._length] = buf[:, :, : self._length]
        return new

    def reset(self) -> None:
        """Forget everything (keep nothing allocated)."""
        self._k = self._v = None
        self._length = 0

    def __repr__(self) -> str:
        shape = None if self._k is None else (*self._k.shape[:2], self._length, self._k.shape[3])
        return f"KVCache(length={self._length}, keys={shape})"
