"""The one adapter to PyTorch's private fused CPU flash-attention kernel.

``torch.ops.aten._scaled_dot_product_flash_attention_for_cpu`` (and its ``_backward``) return the
log-sum-exp the tiled engine needs, but they are private: a torch build may lack them or change their
signature. They are looked up lazily, probed once on a tiny problem against plain PyTorch, and when
absent or different :func:`unavailable` says why -- the tiled engine then computes every segment with
plain PyTorch tiles (never an import error).

Shapes: q ``(B, H, Lq, D)``, k/v ``(B, Hkv, Lk, D)`` (``H`` a multiple of ``Hkv``), additive ``attn_mask``
broadcastable to ``(B, H, Lq, Lk)`` -> ``out (B, H, Lq, D)``, ``lse (B, H, Lq)``.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import Tensor

__all__ = ["unavailable", "forward", "backward", "OP_NAME"]

OP_NAME = "_scaled_dot_product_flash_attention_for_cpu"
_state: dict[str, Any] = {}  # "ops": (fwd, bwd) once found and verified; "why": the reason they cannot be used


def _resolve() -> tuple[Callable[..., Any], Callable[..., Any]]:
    """``(fwd, bwd)`` from ``torch.ops.aten`` (raises AttributeError/RuntimeError when missing)."""
    return getattr(torch.ops.aten, OP_NAME), getattr(torch.ops.aten, OP_NAME + "_backward")


def _probe(fwd: Callable[..., Any], bwd: Callable[..., Any]) -> str | None:
    """Run the ops once on a 1x1x3x4 problem and compare with plain PyTorch; a reason on any mismatch."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 1, 3, 4, generator=g, dtype=torch.float64) for _ in range(3))
    mask = torch.tensor([[0.0, -1e30, 0.0]] * 3, dtype=torch.float64).view(1, 1, 3, 3)
    s = q @ k.transpose(-1, -2) * 0.5 + mask
    lse_ref = torch.logsumexp(s, -1)
    out_ref = torch.softmax(s, -1) @ v
    out, lse = fwd(q, k, v, 0.0, False, attn_mask=mask, scale=0.5)[:2]
    if out.shape != out_ref.shape or lse.shape != lse_ref.shape:
        return f"{OP_NAME} returned shapes {tuple(out.shape)}, {tuple(lse.shape)} (expected (1, 1, 3, 4), (1, 1, 3))"
    if not (torch.allclose(out, out_ref, atol=1e-9) and torch.allclose(lse, lse_ref, atol=1e-9)):
        return f"{OP_NAME} disagrees with plain PyTorch on a probe problem"
    dq, dk, dv = bwd(torch.ones_like(out), q, k, v, out, lse, 0.0, False, attn_mask=mask, scale=0.5)[:3]
    if dq.shape != q.shape or dk.shape != k.shape or dv.shape != v.shape or not math.isfinite(float(dq.sum())):
        return f"{OP_NAME}_backward returned unexpected gradients"
    return None


def unavailable() -> str | None:
    """None when the fused kernel can be used, else why not (looked up and probed once per process)."""
    if "ops" in _state or "why" in _state:
        return _state.get("why")
    try:
        fwd, bwd = _resolve()
        why = _probe(fwd, bwd)
    except Exception as e:  # missing op, changed signature, ...
        why = f"PyTorch {torch.__version__} has no usable {OP_NAME} ({type(e).__name__}: {e})"
    if why is None:
        _state["ops"] = (fwd, bwd)
    else:
        _state["why"] = why
    return why


def reset() -> None:
    """Forget the lookup (tests hide the op and look again)."""
    _state.clear()


def forward(
    q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None, causal: bool, scale: float
) -> tuple[Tensor, Tensor]:
    """``(out, lse)`` of the fused kernel (call only when :func:`unavailable` is None)."""
    out, lse = _state["ops"][0](q, k, v, 0.0, causal, attn_mask=attn_mask, scale=scale)[:2]
    return out, lse


def backward(
    dout: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    lse: Tensor,
    attn_mask: Tensor | None,
    causal: bool,
    scale: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """``(dq, dk, dv)`` of the fused kernel's backward."""
    dq, dk, dv = _state["ops"][1](dout, q, k, v, out, lse, 0.0, causal, attn_mask=attn_mask, scale=scale)[:3]
    return dq, dk, dv
