"""``qkv.masks`` -- boolean attention masks: which (query, key) pairs may attend (``True`` = may attend).

The public face of :mod:`qkv.core.masks` (where the masks and their drawings are documented). Every mask
composes with ``&``, ``|``, ``~``, draws itself, reports per block whether it is empty, full or partial, and
describes itself to the engines (band, translation invariance, children, key lengths).

Example:
    >>> from qkv import masks
    >>> print(masks.global_window(1, 1).draw(4, 4))
       k 0 1 2 3
    q0   ■ ■ ■ ■
    q1   ■ ■ · ·
    q2   ■ ■ ■ ·
    q3   ■ · ■ ■
"""

from .core.mask_base import Band, Mask, MaskLike, as_mask, offset
from .core.masks import (
    EMPTY,
    FULL,
    PARTIAL,
    causal,
    document,
    from_function,
    from_tensor,
    full,
    global_window,
    padding,
    prefix_lm,
    sliding_window,
)

__all__ = [
    "EMPTY",
    "PARTIAL",
    "FULL",
    "Band",
    "Mask",
    "MaskLike",
    "causal",
    "sliding_window",
    "global_window",
    "padding",
    "document",
    "prefix_lm",
    "from_function",
    "from_tensor",
    "full",
    "as_mask",
    "offset",
]
