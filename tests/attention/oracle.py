"""Helpers shared by the tiled/sdpa/merge tests: run an implementation, compare against fp64 by
FlashAttention's rule (error <= 2x the error of a plain fp32 computation, plus a tiny floor)."""

from __future__ import annotations

import torch

from qkv import attention

F32, F64 = torch.float32, torch.float64


def rand(B, Hq, Hkv, Lq, Lk, D, Dv=None, dtype=F64, seed=0):
    g = torch.Generator().manual_seed(seed)
    Dv = D if Dv is None else Dv
    q = torch.randn(B, Hq, Lq, D, dtype=dtype, generator=g)
    k = torch.randn(B, Hkv, Lk, D, dtype=dtype, generator=g)
    v = torch.randn(B, Hkv, Lk, Dv, dtype=dtype, generator=g)
    return q, k, v


def run(impl, q, k, v, dout, dlse, *, mask=None, score_mod=None, extra=(), grads=True):
    """``(out, lse, grads of q, k, v and extra tensors)`` for the loss ``sum(out*dout) + sum(lse*dlse)``
    (``lse`` where finite)."""
    q, k, v = (t.detach().requires_grad_(grads) for t in (q, k, v))
    out, lse = attention(q, k, v, mask=mask, score_mod=score_mod, impl=impl, return_lse=True)
    if not grads:
        return out.detach(), lse.detach(), []
    fin = torch.isfinite(lse)
    loss = (out.to(dout.dtype) * dout).sum() + (torch.where(fin, lse, 0).to(dlse.dtype) * dlse).sum()
    g = torch.autograd.grad(loss, [q, k, v, *extra], allow_unused=True)
    return out.detach(), lse.detach(), [None if x is None else x.detach() for x in g]


def max_err(a, b):
    """max |a - b| over entries, with equal infinities counting as equal; inf where the patterns differ."""
    a, b = a.double(), b.double()
    if not torch.equal(torch.isinf(a), torch.isinf(b)) or torch.isnan(a).any():
        return float("inf")
    fin = torch.isfinite(b)
    return float((a[fin] - b[fin]).abs().max()) if fin.any() else 0.0


def assert_fa_rule(name, got, plain32, ref64, floor=1e-6):
    """FlashAttention's rule: ``|got - ref64| <= 2 |plain32 - ref64| + floor`` (max over entries)."""
    err, base = max_err(got, ref64), max_err(plain32, ref64)
    assert err <= 2 * base + floor, f"{name}: error {err:.3g} > 2 x plain fp32 error {base:.3g} + {floor:g}"


#: PyTorch's fused CPU flash kernel (which impl='tiled' runs where it can) computes gradients of a
#: *masked* segment about 5x less precisely than plain fp32 autograd (measured: 3e-6 vs 6e-7 for
#: gradients of size ~2; its unmasked and is_causal paths are within 2x). Gradients from such
#: segments get this extra floor, relative to the largest gradient entry (about 30 fp32 ulps).
FUSED_GRAD_FLOOR = 1e-5


def compare_to_reference(
    impl,
    q64,
    k64,
    v64,
    *,
    mask=None,
    score_mod=None,
    mod32=None,
    extra64=(),
    extra32=(),
    grads=True,
    floor=1e-6,
    grad_rel_floor=0.0,
):
    """Run ``impl`` in fp32 and the reference in fp32 and fp64; check out, lse and gradients by the FA rule
    (gradients with an extra floor ``grad_rel_floor * max|reference gradient|``)."""
    g = torch.Generator().manual_seed(1)
    B, Hq, Lq = q64.shape[:3]
    dout = torch.randn(B, Hq, Lq, v64.shape[-1], dtype=F64, generator=g)
    dlse = torch.randn(B, Hq, Lq, dtype=F64, generator=g)
    mod32 = score_mod if mod32 is None else mod32
    q32, k32, v32 = (t.float() for t in (q64, k64, v64))
    ref = run("reference", q64, k64, v64, dout, dlse, mask=mask, score_mod=score_mod, extra=extra64, grads=grads)
    plain = run(
        "reference", q32, k32, v32, dout.float(), dlse.float(), mask=mask, score_mod=mod32, extra=extra32, grads=grads
    )
    got = run(impl, q32, k32, v32, dout.float(), dlse.float(), mask=mask, score_mod=mod32, extra=extra32, grads=grads)
    assert got[0].dtype == F32 and got[1].dtype == F32
    for nm, i in (("out", 0), ("lse", 1)):
        assert_fa_rule(nm, got[i], plain[i], ref[i], floor)
    names = ["dq", "dk", "dv"] + [f"d extra{i}" for i in range(len(extra32))]
    for nm, a, p, r in zip(names, got[2], plain[2], ref[2]):
        if r is None:
            continue
        assert a is not None, f"{nm}: no gradient"
        assert_fa_rule(nm, a, p, r, floor + grad_rel_floor * float(r.abs().max()))
    return got, ref
