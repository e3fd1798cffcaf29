"""One rule for NaN and inf, the same for every mask (``None`` included), engine, dtype, forward and backward.

Which query rows a non-finite *input* poisons depends only on where it is and on the mask, never on the value
(a NaN and an inf, in q, k or v, act alike) nor on how an engine's tiles multiply it by 0:

* a key/value position ``j`` is *bad* when ``k[..., j, :]`` or ``v[..., j, :]`` holds NaN/+-inf; a query row is
  bad when ``q[..., i, :]`` does;
* row ``i`` *attends* key ``j`` when the mask admits the pair (no mask: every pair); score mods do not count;
* a row that attends a bad key/value, or a bad row that attends anything, is NaN in ``out`` and ``lse``;
* every other row is exactly the attention of the finite inputs: a bad position the mask excludes never reaches
  an output, an lse or a gradient, and a bad row that attends nothing is an empty row (out 0, lse -inf);
* backward: rows set to NaN are constants (they pass no gradient), and bad entries get gradient 0, so a loss
  that drops NaN rows trains on the rest with finite gradients.

Scores (after the score mod, in the compute dtype) follow IEEE inside each engine: ``-inf`` is weight 0 (a
score mod may mask), a NaN or ``+inf`` score on an attended pair makes its row NaN (out and lse).

How it runs (:func:`attend`):

* eager, finite inputs (the fast path): one reduction over each of q, k, v and one host read
  (:func:`all_finite`), then the engine alone -- nothing else is done;
* non-finite inputs, and always under ``torch.compile`` (:func:`attend_with_rule`, pure tensor ops, no host
  reads): the engine runs on copies with every bad entry set to 0, and the rows to poison are found by one more
  pass of the same engine, without gradient, on ``(B, H, L, 2)`` indicator tensors: ``q = k = 0`` gives every
  admitted key the same weight ``1 / n`` (no underflow), ``v = [bad key, 1]``, so column 0 is > 0 exactly for
  rows that attend a bad key and column 1 for rows that attend anything. Without a mask no pass is needed.

Shapes: q ``(B, Hq, Lq, D)``, k ``(B, Hkv, Lk, D)``, v ``(B, Hkv, Lk, Dv)``.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch
from torch import Tensor

from .inputs import AttentionInputs

__all__ = ["all_finite", "attend", "attend_with_rule", "poisoned_rows"]

Forward = Callable[[AttentionInputs], "tuple[Tensor, Tensor | None]"]


def all_finite(inp: AttentionInputs) -> bool:
    """True when q, k and v hold no NaN/inf: one summing pass over each, one host read. A sum is finite iff
    every entry is (a finite sum that overflows only sends the call down the exact slow path)."""
    acc = inp.compute_dtype
    total = inp.q.detach().sum(dtype=acc) + inp.k.detach().sum(dtype=acc) + inp.v.detach().sum(dtype=acc)
    return bool(torch.isfinite(total))


def poisoned_rows(forward: Forward, inp: AttentionInputs, bad_q: Tensor, bad_kv: Tensor) -> Tensor:
    """``(B, Hq, Lq)`` bool: the rows the rule sets to NaN.

    Args:
        forward: the engine (the one that runs the call, so it takes the mask).
        inp: the call's validated inputs.
        bad_q: ``(B, Hq, Lq)`` bool, query rows holding NaN/inf.
        bad_kv: ``(B, Hkv, Lk)`` bool, key/value positions holding NaN/inf.
    """
    B, Hq, Lq, G = inp.B, inp.Hq, inp.Lq, inp.groups
    if inp.mask is None:  # every row attends every key of its kv head
        bad_head = bad_kv.any(-1).repeat_interleave(G, dim=1)  # (B, Hq): query head h reads kv head h // G
        return bad_q | bad_head.unsqueeze(-1)
    dev = inp.q.device
    flags = torch.stack([bad_kv.float(), torch.ones_like(bad_kv, dtype=torch.float32)], -1)  # (B, Hkv, Lk, 2)
    probe = dataclasses.replace(
        inp,
        q=torch.zeros(B, Hq, Lq, 2, device=dev),
        k=torch.zeros(B, inp.Hkv, inp.Lk, 2, device=dev),
        v=flags,
        score_mod=None,
        dropout_p=0.0,
        generator=None,
        return_lse=False,
        mod_tensors=(),
    )
    with torch.no_grad():
        share = forward(probe)[0]  # (B, Hq, Lq, 2): mean of the flags over the admitted keys
    return (share[..., 0] > 0) | (bad_q & (share[..., 1] > 0))


def attend_with_rule(forward: Forward, inp: AttentionInputs) -> tuple[Tensor, Tensor | None]:
    """``forward(inp)`` under the rule, branch-free (no host reads: what ``torch.compile`` traces)."""
    bad_q = ~torch.isfinite(inp.q.detach()).all(-1)  # (B, Hq, Lq)
    bad_kv = ~(torch.isfinite(inp.k.detach()).all(-1) & torch.isfinite(inp.v.detach()).all(-1))  # (B, Hkv, Lk)
    clean = dataclasses.replace(
        inp,
        q=torch.where(bad_q.unsqueeze(-1), 0.0, inp.q),
        k=torch.where(bad_kv.unsqueeze(-1), 0.0, inp.k),
        v=torch.where(bad_kv.unsqueeze(-1), 0.0, inp.v),
    )
    out, lse = forward(clean)
    poisoned = poisoned_rows(forward, inp, bad_q, bad_kv)
    out = torch.where(poisoned.unsqueeze(-1), float("nan"), out)
    if lse is not None:
        lse = torch.where(poisoned, float("nan"), lse)
    return out, lse


def attend(forward: Forward, inp: AttentionInputs) -> tuple[Tensor, Tensor | None]:
    """``forward(inp)`` under the rule: the engine alone for finite inputs in eager mode, else
    :func:`attend_with_rule` (always under ``torch.compile``; both give identical results)."""
    if inp.Lq == 0 or inp.Lk == 0:  # no row attends anything: out 0, lse -inf, whatever q holds
        out, lse = forward(inp)
    elif not torch.compiler.is_compiling() and all_finite(inp):
        out, lse = forward(inp)
    else:
        out, lse = attend_with_rule(forward, inp)
    if lse is not None:  # a +inf score: NaN (an engine may report the IEEE lse +inf); one pass over (B, Hq, Lq)
        lse = torch.where(lse == float("inf"), float("nan"), lse)
    return out, lse
