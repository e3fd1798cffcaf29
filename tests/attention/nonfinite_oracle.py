"""The documented NaN/inf rule computed independently of :mod:`qkv.core.nonfinite`: a dense mask says which
rows attend a bad position, the fp64 reference on the cleaned inputs gives every other row.

Shapes: q ``(B, Hq, Lq, D)``, k ``(B, Hkv, Lk, D)``, v ``(B, Hkv, Lk, Dv)``.
"""

from __future__ import annotations

import torch

from qkv import attention, masks


def bad_positions(q, k, v):
    """``(bad_q (B, Hq, Lq), bad_kv (B, Hkv, Lk))``: rows/positions holding NaN or +-inf."""
    bad_q = ~torch.isfinite(q).all(-1)
    bad_kv = ~(torch.isfinite(k).all(-1) & torch.isfinite(v).all(-1))
    return bad_q, bad_kv


def poisoned(q, k, v, mask):
    """``(B, Hq, Lq)`` bool: the rows the rule makes NaN, from the dense mask (None: every pair)."""
    B, Hq, Lq, Lk = q.shape[0], q.shape[1], q.shape[2], k.shape[2]
    allowed = torch.ones(B, Hq, Lq, Lk, dtype=torch.bool)
    if mask is not None:
        allowed = allowed & masks.as_mask(mask).dense(B, Hq, Lq, Lk)
    bad_q, bad_kv = bad_positions(q, k, v)
    bad_kv = bad_kv.repeat_interleave(Hq // k.shape[1], dim=1)  # (B, Hq, Lk)
    return (allowed & bad_kv.unsqueeze(2)).any(-1) | (bad_q & allowed.any(-1))


def expected(q, k, v, mask, dout, *, score_mod=None, mod_tensors=(), with_lse=True):
    """``(out, lse, [dq, dk, dv, *d mod_tensors])`` the rule gives for the loss
    ``sum(out * dout) + sum(finite lse)``, in fp64 (``score_mod`` must compute with ``mod_tensors`` in fp64)."""
    rows = poisoned(q, k, v, mask)
    bad_q, bad_kv = bad_positions(q, k, v)
    clean = [
        torch.where(bad.unsqueeze(-1), 0.0, t).double().requires_grad_()
        for bad, t in ((bad_q, q), (bad_kv, k), (bad_kv, v))
    ]
    out, lse = attention(*clean, mask=mask, score_mod=score_mod, impl="reference", return_lse=True)
    keep = ~rows
    loss = (out * (dout.double() * keep.unsqueeze(-1))).sum()
    if with_lse:
        loss = loss + torch.where(torch.isfinite(lse) & keep, lse, 0.0).sum()
    grads = list(torch.autograd.grad(loss, [*clean, *mod_tensors], allow_unused=True)) if loss.requires_grad else []
    if grads:
        grads[0] = grads[0].masked_fill(bad_q.unsqueeze(-1), 0.0)  # bad entries: gradient 0
        grads[1] = grads[1].masked_fill(bad_kv.unsqueeze(-1), 0.0)
        grads[2] = grads[2].masked_fill(bad_kv.unsqueeze(-1), 0.0)
    nan = float("nan")
    out = torch.where(rows.unsqueeze(-1), nan, out.detach())
    lse = torch.where(rows, nan, lse.detach())
    return out, lse, [None if g is None else g.detach() for g in grads]


def assert_rule(name, got, want, tol):
    """NaN exactly where ``want`` has NaN, infinities alike, finite entries within ``tol`` x (max |want| + 1)."""
    got, want = got.detach().double(), want.detach().double()
    nan_got, nan_want = torch.isnan(got), torch.isnan(want)
    assert torch.equal(nan_got, nan_want), (
        f"{name}: NaN at {nan_got.nonzero().tolist()[:8]}, the rule says {nan_want.nonzero().tolist()[:8]}"
    )
    assert torch.equal(torch.isinf(got), torch.isinf(want)), f"{name}: infinities differ"
    fin = torch.isfinite(want)
    if fin.any():
        err = float((got[fin] - want[fin]).abs().max())
        scale = float(want[fin].abs().max()) + 1.0
        assert err <= tol * scale, f"{name}: max error {err:.3g} > {tol:.1g} x {scale:.3g}"
