"""Validation of attention inputs: one place that checks shapes, dtypes and options and says
what was expected, what arrived and how to fix it.

Shape legend: ``B`` batch, ``Hq``/``Hkv`` query/key-value heads, ``Lq``/``Lk`` lengths,
``D`` head dim of q and k, ``Dv`` head dim of v.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from . import mask_base as _masks
from . import mods as _mods
from .capture import captured_tensors

__all__ = ["AttentionInputs", "check_inputs", "LOW_PRECISION"]

LOW_PRECISION = (torch.float16, torch.bfloat16)


@dataclass(frozen=True, slots=True)
class AttentionInputs:
    """Validated inputs of one attention call (what implementations receive).

    Attributes:
        q: ``(B, Hq, Lq, D)``; k: ``(B, Hkv, Lk, D)``; v: ``(B, Hkv, Lk, Dv)``.
        mask: a :class:`qkv.masks.Mask` or None. score_mod: a :class:`qkv.mods.ScoreMod` or None.
        scale: the factor applied to ``q @ k^T``. dropout_p, generator: dropout on the weights.
        return_lse: whether the caller wants the log-sum-exp ``(B, Hq, Lq)``.
        mod_tensors: the tensors requiring grad that the score mod computes with, wherever they are held
            (found by :func:`qkv.core.capture.captured_tensors` when autograd is on; empty otherwise).
        B, Hq, Hkv, Lq, Lk, D, Dv: the sizes, read from q/k/v once (plain fields: dispatch reads them often).
        groups: query heads per key/value head (1 = MHA, Hq = MQA). dtype: the inputs' dtype.
        device_type: ``q.device.type`` (``"cpu"``, ``"cuda"``, ...).
        compute_dtype: fp16/bf16 accumulate in fp32; fp32 and fp64 compute in their own dtype.
    """

    q: Tensor
    k: Tensor
    v: Tensor
    mask: _masks.Mask | None
    score_mod: _mods.ScoreMod | None
    scale: float
    dropout_p: float
    generator: torch.Generator | None
    return_lse: bool
    mod_tensors: tuple[Tensor, ...] = ()
    B: int = field(init=False)
    Hq: int = field(init=False)
    Hkv: int = field(init=False)
    Lq: int = field(init=False)
    Lk: int = field(init=False)
    D: int = field(init=False)
    Dv: int = field(init=False)
    groups: int = field(init=False)
    dtype: torch.dtype = field(init=False)
    compute_dtype: torch.dtype = field(init=False)
    device_type: str = field(init=False)

    def __post_init__(self) -> None:
        (B, Hq, Lq, D), (_, Hkv, Lk, _), Dv = self.q.shape, self.k.shape, self.v.shape[3]
        dtype = self.q.dtype
        for name, value in (
            ("B", B),
            ("Hq", Hq),
            ("Hkv", Hkv),
            ("Lq", Lq),
            ("Lk", Lk),
            ("D", D),
            ("Dv", Dv),
            ("groups", Hq // Hkv),
            ("dtype", dtype),
            ("compute_dtype", torch.float32 if dtype in LOW_PRECISION else dtype),
            ("device_type", self.q.device.type),
        ):
            object.__setattr__(self, name, value)

    @property
    def needs_grad(self) -> bool:
        return torch.is_grad_enabled() and any(t.requires_grad for t in (self.q, self.k, self.v, *self.mod_tensors))


def _fail(what: str, got: str, fix: str) -> ValueError:
    return ValueError(f"{what}, got {got}; {fix}")


def check_inputs(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    mask: _masks.MaskLike = None,
    score_mod: _mods.ScoreModLike = None,
    scale: float | None = None,
    dropout_p: float = 0.0,
    generator: torch.Generator | None = None,
    return_lse: bool = False,
) -> AttentionInputs:
    """Validate and normalise the arguments of :func:`qkv.attention`; raise ``ValueError`` otherwise."""
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor):
            raise _fail(f"{name} must be a torch.Tensor", type(t).__name__, "pass a tensor of shape (B, H, L, D)")
    qs, ks, vs = q.shape, k.shape, v.shape
    if len(qs) != 4 or len(ks) != 4 or len(vs) != 4:
        name, t = next((n, t) for n, t in (("q", q), ("k", k), ("v", v)) if t.dim() != 4)
        raise _fail(
            f"{name} must have 4 dims (B, H, L, D) like scaled_dot_product_attention",
            f"{t.dim()} dims with shape {tuple(t.shape)}",
            "add missing dims with .unsqueeze(0)/(1), or split heads with .view(B, L, H, D).transpose(1, 2)",
        )
    if not (q.dtype == k.dtype == v.dtype and q.dtype.is_floating_point):
        for name, t in (("q", q), ("k", k), ("v", v)):
            if not t.dtype.is_floating_point:
                raise _fail(f"{name} must be a floating-point tensor", str(t.dtype), f"convert with {name}.float()")
        raise _fail(
            "q, k and v must share one dtype",
            f"q {q.dtype}, k {k.dtype}, v {v.dtype}",
            "convert them with .to(q.dtype)",
        )
    device = q.device
    if k.device != device or v.device != device:
        raise _fail(
            "q, k and v must be on one device",
            f"q {q.device}, k {k.device}, v {v.device}",
            "move them with .to(q.device)",
        )
    if not (qs[0] == ks[0] == vs[0]):
        raise _fail(
            "q, k and v must share the batch size (dim 0)",
            f"q {qs[0]}, k {ks[0]}, v {vs[0]}",
            "give all three the same batch",
        )
    if qs[3] != ks[3]:
        raise _fail(
            f"k has head_dim {ks[3]} but q has {qs[3]}: q and k must share head_dim (dim 3)",
            f"q {tuple(qs)}, k {tuple(ks)}",
            "project q and k to the same head_dim",
        )
    if qs[3] == 0:
        raise _fail("head_dim must be at least 1", f"q {tuple(qs)}", "give q and k a non-empty last dim")
    if ks[2] != vs[2]:
        raise _fail(
            f"k has length {ks[2]} but v has {vs[2]}: every key needs a value (dim 2)",
            f"k {tuple(ks)}, v {tuple(vs)}",
            "give k and v the same length",
        )
    if ks[1] != vs[1]:
        raise _fail(
            f"k has {ks[1]} heads but v has {vs[1]}: k and v must share heads (dim 1)",
            f"k {tuple(ks)}, v {tuple(vs)}",
            "give k and v the same number of heads",
        )
    if ks[1] == 0 or qs[1] % ks[1] != 0:
        raise _fail(
            f"q has {qs[1]} heads and k/v {ks[1]}: query heads must be a multiple of key/value heads (GQA/MQA)",
            f"Hq % Hkv = {qs[1]} % {ks[1]}",
            "use Hkv that divides Hq (Hkv = Hq for MHA, 1 for MQA)",
        )
    if scale is None:
        scale = 1.0 / math.sqrt(qs[3])
    else:
        if isinstance(scale, Tensor):
            if scale.numel() != 1 or scale.requires_grad:
                raise _fail(
                    "scale must be one number (a float or a one-element tensor without gradient)",
                    f"a tensor of shape {tuple(scale.shape)}" + (" that requires grad" if scale.requires_grad else ""),
                    "pass one factor, e.g. scale=0.125; a per-head or learnable scale belongs in a score_mod, "
                    "e.g. score_mod=lambda s, b, h, q, kv: s * w[h]",
                )
            scale = float(scale)
        if not isinstance(scale, (int, float)) or isinstance(scale, bool) or not math.isfinite(scale) or scale <= 0:
            raise _fail(
                "scale must be a positive finite number",
                repr(scale),
                "leave it None for 1/sqrt(head_dim), or pass e.g. 0.125",
            )
        scale = float(scale)
    if not isinstance(dropout_p, (int, float)) or isinstance(dropout_p, bool) or not (0.0 <= dropout_p < 1.0):
        raise _fail(
            "dropout_p must be a probability in [0, 1)",
            repr(dropout_p),
            "pass 0.0 for inference or e.g. 0.1 for training",
        )
    if generator is not None and not isinstance(generator, torch.Generator):
        raise _fail(
            "generator must be a torch.Generator", type(generator).__name__, "pass torch.Generator().manual_seed(0)"
        )
    B, Hq, Lq, Lk = qs[0], qs[1], qs[2], ks[2]
    mask = _masks.as_mask(mask)
    if mask is not None:
        mask.check(B, Hq, Lq, Lk)
    score_mod = _mods.as_mod(score_mod)
    mod_tensors: tuple[Tensor, ...] = ()
    if score_mod is not None:
        score_mod.check(B, Hq, Lq, Lk)
        if torch.is_grad_enabled():
            cd = torch.float32 if q.dtype in LOW_PRECISION else q.dtype
            mod_tensors = tuple(captured_tensors(score_mod, B, Hq, Lq, Lk, cd, q.device))
    return AttentionInputs(q, k, v, mask, score_mod, scale, float(dropout_p), generator, bool(return_lse), mod_tensors)
