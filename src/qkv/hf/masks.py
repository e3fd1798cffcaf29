"""Masks for the ``"qkv"`` transformers backend: transformers' mask *structure* as :mod:`qkv.masks`.

transformers 5 builds every mask through ``ALL_MASK_ATTENTION_FUNCTIONS[attn_implementation](...)``
with the pattern as a composed ``mask_function`` (causal, sliding-window overlay, bidirectional),
the 2-D padding mask and the absolute offsets of the query/key rows. :func:`mask_interface` is
registered there under ``"qkv"``: it reads the composition (no dense ``Lq x Lk`` tensor is built) and
returns a :class:`qkv.masks.Mask` that the attention call receives as ``attention_mask``:

* causal / sliding window / bidirectional window -> a band ``lo <= kv - q <= hi`` ->
  ``qkv.masks.causal`` / ``qkv.masks.sliding_window`` (block-sparse: the tiled engine skips what the
  window excludes);
* 2-D padding -> ``qkv.masks.padding`` (right padding), ``~padding(start) & padding(end)`` (left
  padding), else a ``(B, 1, 1, Lk)`` key tensor;
* anything else (packed sequences, chunked, block-wise overlays, ``or`` masks) -> transformers' own
  dense mask, then :func:`recover` (exact structure if there is one, else the tensor).

:func:`recover` also handles dense masks transformers (or a user) passes directly: bool or additive
float ``(B|1, H|1, Lq, Lk)``; the structure is used only when it reproduces the tensor exactly.

Shape legend: ``B`` batch, ``Lq`` queries, ``Lk`` keys.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import masks as qmasks

__all__ = ["mask_interface", "band_of", "band_mask", "padding_mask", "recover", "Band"]

#: ``Band(lo, hi)``: a pair may attend when ``lo <= kv - q <= hi`` in absolute positions (None = unbounded);
#: qkv's own band (:class:`qkv.masks.Band`), re-exported here for the names it had.
Band = qmasks.Band

_FULL = Band(None, None)


def band_of(fn) -> Band | None:
    """The band of a transformers ``mask_function`` built from its public pieces, or None if unknown.

    Recognised: ``causal_mask_function``, ``bidirectional_mask_function``,
    ``sliding_window_overlay(w)``, ``sliding_window_bidirectional_overlay(w)`` and ``and_masks`` of them
    (the :meth:`Band.intersect <qkv.masks.Band.intersect>` of their bands).
    """
    name = getattr(fn, "__qualname__", "")
    cells = {}
    code = getattr(fn, "__code__", None)
    if code is not None and fn.__closure__:
        cells = dict(zip(code.co_freevars, (c.cell_contents for c in fn.__closure__)))
    if name == "causal_mask_function":
        return Band(None, 0)
    if name == "bidirectional_mask_function":
        return _FULL
    if name == "sliding_window_overlay.<locals>.inner_mask" and isinstance(cells.get("sliding_window"), int):
        return Band(1 - cells["sliding_window"], None)  # kv > q - w
    if name == "sliding_window_bidirectional_overlay.<locals>.inner_mask" and isinstance(
        cells.get("sliding_window"), int
    ):
        w = cells["sliding_window"]
        return Band(-w, w)  # |q - kv| <= w
    if name == "and_masks.<locals>.and_mask" and isinstance(cells.get("mask_functions"), tuple):
        band = _FULL
        for sub in cells["mask_functions"]:
            b = band_of(sub)
            if b is None:
                return None
            band = band.intersect(b)
        return band
    return None


def band_mask(band: Band, lq: int, lk: int, shift: int) -> qmasks.Mask | None:
    """``lo <= kv - q <= hi`` (absolute) for local rows/columns, where ``kv - q = local + shift``
    (``shift = kv_offset - q_offset``), as a structured qkv mask; None when the band needs a dense mask.
    """
    lo, hi = band.lo, band.hi
    if lo is not None and lo - shift <= 1 - lq:  # excludes nothing here (a window longer than the problem)
        lo = None
    if hi is not None and hi - shift >= lk - 1:
        hi = None
    if lo is None and hi is None:
        return qmasks.full()
    big = lq + lk  # "unbounded" within the problem
    fits = []
    for align, off in (("bottom_right", lk - lq), ("top_left", 0)):
        # qkv's band around the aligned diagonal: -left <= local - off <= right
        right = None if hi is None else hi - shift - off
        left = None if lo is None else off + shift - lo
        if (right is None or right >= 0) and (left is None or left >= 0):
            fits.append((align, left, right))
    for align, left, right in fits:
        if left is None and right == 0:  # plain causal (SDPA's is_causal when top-left)
            return qmasks.causal(align=align)
    if not fits:
        return None
    align, left, right = fits[0]
    return qmasks.sliding_window(big if left is None else left, big if right is None else right, align=align)


def padding_mask(keys: Tensor | None) -> qmasks.Mask | None:
    """A 2-D key mask ``(B, Lk)`` (True = real token) as a qkv mask, or None when every key is real.

    Right padding -> ``padding(lengths)``; one contiguous run (left padding) -> ``~padding(start) &
    padding(end)``; anything else -> a ``(B, 1, 1, Lk)`` tensor mask.
    """
    if keys is None:
        return None
    keys = keys.bool()
    if bool(keys.all()):
        return None
    B, Lk = keys.shape
    pos = torch.arange(Lk, device=keys.device)
    count = keys.sum(-1)
    start = torch.where(keys.any(-1), torch.where(keys, pos, Lk).amin(-1), 0)
    end = start + count
    contiguous = bool(((pos >= start[:, None]) & (pos < end[:, None]) == keys).all())
    if not contiguous:
        return qmasks.from_tensor(keys.view(B, 1, 1, Lk))
    if bool((start == 0).all()):
        return qmasks.padding(end.cpu())
    return ~qmasks.padding(start.cpu()) & qmasks.padding(end.cpu())


def _and(a: qmasks.Mask | None, b: qmasks.Mask | None) -> qmasks.Mask | None:
    if a is None or b is None:
        return a if b is None else b
    return a & b


def mask_interface(
    batch_size: int,
    q_length: int,
    kv_length: int,
    q_offset: int = 0,
    kv_offset: int = 0,
    mask_function=None,
    attention_mask: Tensor | None = None,
    **kwargs,
) -> qmasks.Mask:
    """transformers' mask-interface signature -> a :class:`qkv.masks.Mask` for ``(B, 1, Lq, Lk)``.

    ``attention_mask`` is the 2-D padding mask ``(B, >= kv_offset + Lk)`` (True/1 = real token).
    """
    from transformers import masking_utils as mu

    q_offset, kv_offset = int(q_offset), int(kv_offset)
    band = band_of(mask_function) if mask_function is not None else Band(None, 0)
    structured = None if band is None else band_mask(band, q_length, kv_length, kv_offset - q_offset)
    if structured is None:
        dense = mu.sdpa_mask(
            batch_size=batch_size,
            q_length=q_length,
            kv_length=kv_length,
            q_offset=q_offset,
            kv_offset=kv_offset,
            mask_function=mask_function,
            attention_mask=attention_mask,
            allow_is_causal_skip=False,
            allow_is_bidirectional_skip=False,
            use_vmap=kwargs.get("use_vmap", False),
            device=kwargs.get("device", "cpu"),
        )
        return recover(dense, q_length, kv_length)
    keys = None
    if attention_mask is not None:
        pm = mu.prepare_padding_mask(attention_mask.bool(), kv_length, kv_offset)
        keys = pm[:, kv_offset : kv_offset + kv_length]
    every = isinstance(structured, type(qmasks.full()))  # e.g. one decoding step inside its window
    return _and(None if every else structured, padding_mask(keys)) or qmasks.full()


def _as_bool(t: Tensor) -> tuple[Tensor | None, Tensor | None]:
    """``(allowed, bias)`` of a bool or additive float mask: bias is None when the float mask only
    holds 0 and "masked" values (<= dtype.min / 2 or -inf)."""
    if t.dtype == torch.bool:
        return t, None
    if not t.dtype.is_floating_point:
        return t != 0, None
    blocked = t <= torch.finfo(t.dtype).min / 2
    if bool(((t == 0) | blocked).all()):
        return ~blocked, None
    return ~blocked, t.masked_fill(blocked, 0.0)


def recover(t: Tensor, lq: int, lk: int) -> qmasks.Mask:
    """A dense mask ``(B|1, H|1, Lq, Lk')`` (``Lk' >= Lk``, bool or additive float) as a qkv mask.

    Returns the structure ``band & key padding`` when it reproduces ``t`` exactly, else the tensor
    (float masks with other values than 0 / masked are handled by the caller as a score bias).
    """
    if t.dim() != 4 or t.shape[-2] != lq or t.shape[-1] < lk:
        raise ValueError(
            f"qkv backend: expected a mask of shape (B, 1|H, {lq}, >= {lk}), got {tuple(t.shape)}; "
            "pass transformers' 4-D mask or a 2-D padding mask (B, L)"
        )
    allowed, bias = _as_bool(t[..., :lk])
    if bias is not None:
        raise ValueError(
            "qkv backend: the float mask holds biases, not only 0 / -inf; use qkv.hf.attention_forward, "
            "which turns it into qkv.mods.bias"
        )
    if allowed.shape[1] != 1 and not bool((allowed == allowed[:, :1]).all()):
        return qmasks.from_tensor(allowed)
    allowed = allowed[:, :1]
    B = allowed.shape[0]
    keys = allowed.any(-2).view(B, lk)  # keys some query may see
    q = torch.arange(lq, device=t.device).view(lq, 1)
    d = torch.arange(lk, device=t.device).view(1, lk) - q  # local kv - q
    seen = allowed.any(0).view(lq, lk)
    if not bool(seen.any()):
        return qmasks.from_tensor(allowed)
    lo, hi = int(d[seen].min()), int(d[seen].max())
    band = Band(None if lo <= 1 - lq else lo, None if hi >= lk - 1 else hi)  # the extremes: unbounded
    candidate = _and(None if band.full else band_mask(band, lq, lk, 0), padding_mask(keys))
    if candidate is None:
        candidate = qmasks.full()
    if bool((candidate.dense(B, 1, lq, lk, device=t.device) == allowed).all()):
        return candidate
    return qmasks.from_tensor(allowed)
