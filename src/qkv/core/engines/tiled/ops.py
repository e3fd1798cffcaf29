"""The tiled engine as registered PyTorch ops: what ``torch.compile`` sees of it.

Under ``torch.compile`` the planner (block maps, segments, schedules) cannot run in traced code: it reads
mask values on the host (``.item()``, ``bool(tensor)``), and each read would split the user's graph. The
field's way (flash-attn, FlexAttention's kernels): the forward and the backward are registered ops
(:func:`torch.library.custom_op`) with fake implementations (shapes only) and a registered autograd formula,
taking only tensors and plain values:

* ``qkv::tiled_attention(q, k, v, tensors, spec, scale, grad_index, needs_grad) -> (out, lse)``;
* ``qkv::tiled_attention_backward(dout, dlse, q, k, v, out, lse, tensors, spec, scale, grad_index)
  -> (dq, dk, dv, [d tensors[i] for i in grad_index])``.

``spec`` and ``tensors`` are the mask and score mod as :func:`.spec.describe` gives them; inside the op they
are rebuilt (:func:`.spec.cached_rebuild`) and the plan is made on the host from the shapes and the actual
tensor values (padding lengths, document ids decide block skipping there), cached as in eager mode. Dynamo
traces only :func:`tiled_forward`'s description, which is constant folding: no graph break, ``fullgraph=True``
works, and a new sequence length changes only shapes (dynamic shapes: no recompile per length).

Outside ``torch.compile`` :func:`tiled_forward` is the eager engine itself (no op dispatch overhead). A mask
given as a Python function (``masks.from_function``) enters the op as its dense bool tensor; a score mod given
as a Python function cannot enter it (the engine declines under compilation, see :func:`compile_reason`).

Shape legend: q ``(B, Hq, Lq, D)``, k ``(B, Hkv, Lk, D)``, v ``(B, Hkv, Lk, Dv)``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ...inputs import AttentionInputs
from ...lse import lse_dtype
from ...mask_base import Mask, as_mask
from ...mods import ScoreMod
from . import engine
from .spec import cached_rebuild, describe, rebuild

__all__ = ["tiled_forward", "compile_reason", "tiled_attention", "tiled_attention_backward"]


def _inputs(
    q: Tensor, k: Tensor, v: Tensor, mask: Mask | None, mod: ScoreMod | None, scale: float, params: tuple[Tensor, ...]
) -> AttentionInputs:
    return AttentionInputs(q, k, v, mask, mod, scale, 0.0, None, False, params)


def _compute(t: Tensor) -> Tensor:
    cd = torch.float32 if t.dtype in (torch.float16, torch.bfloat16) else t.dtype
    t = t.to(cd)
    return t if t.stride(-1) == 1 else t.contiguous()


@torch.library.custom_op("qkv::tiled_attention", mutates_args=())
def tiled_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    tensors: list[Tensor],
    spec: str,
    scale: float,
    grad_index: list[int],
    needs_grad: bool,
) -> tuple[Tensor, Tensor]:
    """``(out (B, Hq, Lq, Dv) in q's dtype, lse (B, Hq, Lq))``, both with heads innermost in memory."""
    if grad_index:  # tensors that will get gradients: never cached (as in eager mode)
        mask, mod = rebuild(spec, tensors)
    else:
        mask, mod = cached_rebuild(spec, tensors)
    params = tuple(tensors[i] for i in grad_index)
    inp = _inputs(q, k, v, mask, mod, scale, params)
    p = engine._problem(inp, needs_grad)
    out, lse = engine._forward(p, _compute(q), _compute(k), _compute(v))
    return _heads_inner(out.to(q.dtype)), _heads_inner(lse)


def _heads_inner(t: Tensor) -> Tensor:
    """``t`` ``(B, H, L, ...)`` in ``(B, L, H, ...)`` memory: the fused kernel's own output layout (no copy when
    it is already so), which a model's ``out.transpose(1, 2).reshape(B, L, H * Dv)`` reads without a copy."""
    return t.transpose(1, 2).contiguous().transpose(1, 2)


@tiled_attention.register_fake
def _(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    tensors: list[Tensor],
    spec: str,
    scale: float,
    grad_index: list[int],
    needs_grad: bool,
) -> tuple[Tensor, Tensor]:
    B, Hq, Lq, _ = q.shape
    out = q.new_empty((B, Lq, Hq, v.shape[3])).transpose(1, 2)
    return out, q.new_empty((B, Lq, Hq), dtype=lse_dtype(q.dtype)).transpose(1, 2)


def _autograd_inside() -> Any:
    """Let autograd record inside an op's implementation (the dispatcher excludes it there): a score mod's
    gradient into its tensors is taken with :func:`torch.autograd.grad`, as in eager mode."""
    from torch._C import DispatchKey as K

    exclude = torch._C._dispatch_tls_local_exclude_set()
    for key in (K.AutogradFunctionality, K.AutogradOther, K.AutogradNestedTensor):
        exclude = exclude.remove(key)
    return torch._C._ForceDispatchKeyGuard(torch._C._dispatch_tls_local_include_set(), exclude)


@torch.library.custom_op("qkv::tiled_attention_backward", mutates_args=())
def tiled_attention_backward(
    dout: Tensor,
    dlse: Tensor | None,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    lse: Tensor,
    tensors: list[Tensor],
    spec: str,
    scale: float,
    grad_index: list[int],
) -> tuple[Tensor, Tensor, Tensor, list[Tensor]]:
    """``(dq, dk, dv, [gradient of tensors[i] for i in grad_index])`` (contiguous, in the inputs' dtypes)."""
    with _autograd_inside():
        tensors = list(tensors)
        for i in grad_index:
            tensors[i] = tensors[i].detach().requires_grad_(True)
        mask, mod = rebuild(spec, tensors) if grad_index else cached_rebuild(spec, tensors)
        params = tuple(tensors[i] for i in grad_index)
        inp = _inputs(q, k, v, mask, mod, scale, params)
        p = engine._problem(inp, True)
        qc, kc, vc, oc = (_compute(t) for t in (q, k, v, out))
        dq, dk, dv, dmods = engine._backward(p, qc, kc, vc, oc, lse, _compute(dout).contiguous(), dlse, params)
    dmods = [torch.zeros_like(t) if g is None else g.to(t.dtype) for t, g in zip(params, dmods)]
    dmods += [torch.zeros_like(t) for t in params[len(dmods) :]]  # the fused path gives none
    return (
        dq.to(q.dtype).contiguous(),
        dk.to(k.dtype).contiguous(),
        dv.to(v.dtype).contiguous(),
        [g.detach().contiguous() for g in dmods],
    )


@tiled_attention_backward.register_fake
def _(
    dout: Tensor,
    dlse: Tensor | None,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    lse: Tensor,
    tensors: list[Tensor],
    spec: str,
    scale: float,
    grad_index: list[int],
) -> tuple[Tensor, Tensor, Tensor, list[Tensor]]:
    return (
        q.new_empty(q.shape),
        k.new_empty(k.shape),
        v.new_empty(v.shape),
        [tensors[i].new_empty(tensors[i].shape) for i in grad_index],
    )


def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, Tensor]) -> None:
    q, k, v, tensors, spec, scale, grad_index, _ = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, *tensors)
    ctx.spec, ctx.scale, ctx.grad_index, ctx.n = spec, scale, grad_index, len(tensors)


def _backward(ctx: Any, dout: Tensor, dlse: Tensor | None) -> tuple[Any, ...]:
    q, k, v, out, lse, *tensors = ctx.saved_tensors
    dq, dk, dv, dparams = tiled_attention_backward(
        dout, dlse, q, k, v, out, lse, tensors, ctx.spec, ctx.scale, ctx.grad_index
    )
    dtensors: list[Tensor | None] = [None] * ctx.n
    for i, g in zip(ctx.grad_index, dparams):
        dtensors[i] = g
    # a list of ints gets None, an empty list [] (torch.library's rule for the structure of the inputs)
    return dq, dk, dv, dtensors, None, None, None if ctx.grad_index else [], None


tiled_attention.register_autograd(_backward, setup_context=_setup_context)


def compile_reason(inp: AttentionInputs) -> list[str]:
    """Why the tiled engine cannot run ``inp`` inside ``torch.compile`` (empty: it can, or not compiling)."""
    if not torch.compiler.is_compiling() or describe(None, inp.score_mod) is not None:
        return []
    return [
        f"under torch.compile a score mod given as a Python function ({inp.score_mod!r}) cannot enter the tiled "
        "op; use a built-in mod (qkv.mods.alibi/softcap/bias/compose) or impl='reference', which traces the "
        "function into the graph"
    ]


def tiled_forward(inp: AttentionInputs) -> tuple[Tensor, Tensor]:
    """``(out, lse)`` of validated inputs: the eager engine, or under ``torch.compile`` the registered op."""
    if not torch.compiler.is_compiling():
        return engine.tiled_forward(inp)
    mask = inp.mask
    described = describe(mask, inp.score_mod)
    if (
        described is None and mask is not None and describe(mask, None) is None
    ):  # a mask function: its dense bool tensor enters
        Bm = inp.B if mask.batch_size is not None else 1
        Hm = inp.Hq if mask.num_heads is not None else 1
        mask = as_mask(mask.dense(Bm, Hm, inp.Lq, inp.Lk, inp.q.device))
        described = describe(mask, inp.score_mod)
    if described is None:
        raise ValueError(compile_reason(inp)[0])
    spec, tensors = described
    grad_index = [i for i, t in enumerate(tensors) if t.requires_grad] if torch.is_grad_enabled() else []
    out: Tensor
    lse: Tensor
    out, lse = tiled_attention(inp.q, inp.k, inp.v, tensors, spec, inp.scale, grad_index, inp.needs_grad)
    return out, lse
