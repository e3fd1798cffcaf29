"""One rule for NaN and inf, for every implementation.

* A value in keys/values that the mask excludes never reaches an output, an lse or a gradient.
* A non-finite key/value that *is* attended makes exactly the query rows that attend it NaN (out and lse).
* A non-finite query row that attends something is NaN; one that attends nothing gives 0 / -inf, like any
  empty row.

Engines differ in how a ``0 * nan`` inside a tile or fused kernel spreads, so the rule is applied around
them: when a mask is given and the output holds NaN/inf (one pass over the output, :func:`needs_rule`; finite
inputs never take the slow path), the implementation runs again on inputs with every non-finite position set
to 0, and the rows that touch those positions are set to NaN afterwards. Without a mask every query attends
every key, and NaN spreads the same way in every engine.

Shapes: q ``(B, Hq, Lq, D)``, k ``(B, Hkv, Lk, D)``, v ``(B, Hkv, Lk, Dv)``.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch
from torch import Tensor

from .inputs import AttentionInputs

__all__ = ["needs_rule", "run_with_nonfinite"]

_CHUNK = 1024  #: bad key columns evaluated against the mask at a time


def _all_finite(t: Tensor) -> bool:
    """One pass, no copy: a sum is finite iff every entry is (a huge finite sum only costs the slow path)."""
    return bool(torch.isfinite(t.detach().sum()))


def needs_rule(inp: AttentionInputs, out: Tensor) -> bool:
    """True when a mask is given and ``out`` is not all finite: only then can non-finite inputs have spread
    differently in different engines (an excluded NaN that a tile multiplied by 0). Masked-out NaN that
    no engine let through leaves the output finite, and that output is already right."""
    return inp.mask is not None and inp.Lq > 0 and inp.Lk > 0 and not _all_finite(out)


def _rows_touching(inp: AttentionInputs, bad_kv: Tensor) -> Tensor:
    """``(B, Hq, Lq)`` bool: query rows whose mask admits a bad key/value position (``bad_kv (B, Hkv, Lk)``)."""
    B, Hq, Lq, G = inp.B, inp.Hq, inp.Lq, inp.groups
    bad = bad_kv.repeat_interleave(G, dim=1)  # (B, Hq, Lk): query head h reads kv head h // G
    if inp.mask is None:  # every row attends every key
        return bad.any(-1, keepdim=True).expand(B, Hq, Lq).clone()
    cols = bad.any(dim=(0, 1)).nonzero().flatten()
    touched = torch.zeros(B, Hq, Lq, dtype=torch.bool, device=inp.q.device)
    b = torch.arange(B, device=touched.device).view(B, 1, 1, 1)
    h = torch.arange(Hq, device=touched.device).view(1, Hq, 1, 1)
    qi = torch.arange(Lq, device=touched.device).view(1, 1, Lq, 1)
    for s in range(0, cols.numel(), _CHUNK):
        c = cols[s : s + _CHUNK]
        allowed = inp.mask.evaluate(b, h, qi, c.view(1, 1, 1, -1), Lq, inp.Lk)  # (B|1, H|1, Lq, c)
        touched |= (allowed & bad[:, :, c].unsqueeze(2)).any(-1)
    return touched


def run_with_nonfinite(
    forward: Callable[[AttentionInputs], tuple[Tensor, Tensor | None]], inp: AttentionInputs
) -> tuple[Tensor, Tensor | None]:
    """``forward(inp)`` under the rule above (call when :func:`needs_rule`)."""
    bad_q = ~torch.isfinite(inp.q.detach()).all(-1)  # (B, Hq, Lq)
    bad_kv = ~(torch.isfinite(inp.k.detach()).all(-1) & torch.isfinite(inp.v.detach()).all(-1))  # (B, Hkv, Lk)
    clean = dataclasses.replace(
        inp,
        q=torch.where(bad_q.unsqueeze(-1), 0.0, inp.q).to(inp.dtype),
        k=torch.where(bad_kv.unsqueeze(-1), 0.0, inp.k).to(inp.dtype),
        v=torch.where(bad_kv.unsqueeze(-1), 0.0, inp.v).to(inp.dtype),
    )
    out, lse = forward(clean)
    touched = _rows_touching(inp, bad_kv)
    if bool(bad_q.any()):
        attends = torch.isfinite(lse) if lse is not None else torch.ones_like(bad_q)
        touched |= bad_q & attends
    nan = torch.tensor(float("nan"), dtype=out.dtype, device=out.device)
    out = torch.where(touched.unsqueeze(-1), nan, out)
    if lse is not None:
        lse = torch.where(touched, torch.tensor(float("nan"), dtype=lse.dtype, device=lse.device), lse)
    return out, lse
