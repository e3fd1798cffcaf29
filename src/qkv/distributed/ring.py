"""Exact ring attention over ``torch.distributed`` (gloo on CPU, nccl on GPU).

Every rank holds a shard of the sequence: queries ``q (B, Hq, Lq, D)`` and keys/values ``k (B, Hkv, Lk, D)``,
``v (B, Hkv, Lk, Dv)`` of its own positions (:mod:`qkv.distributed.sharding`). K/V shards travel
around the ring ``r -> r+1`` with point-to-point ops; at each step a rank computes the partial
state ``(out_j, lse_j)`` of its queries against the shard it holds with :func:`qkv.attention` --
masks and score mods see GLOBAL positions through ``qkv.masks.offset`` / ``qkv.mods.offset`` -- and
folds it into its running result with :func:`qkv.merge`, which is exact::

    lse = log(sum_j exp(lse_j))        out = sum_j exp(lse_j - lse) * out_j

Communication overlaps compute: the receive of the next shard (and the send of the current one)
is posted before the current shard is computed (double buffering). Shard pairs that the mask
leaves empty are not computed, and shards travel only as far as the last rank that needs them
(:mod:`qkv.distributed.plan`): under a causal mask with the contiguous layout nothing crosses the
wrap-around; with ``layout="zigzag"`` the causal work is the same on every rank.

Backward is a second ring pass (a custom ``torch.autograd.Function``): K/V travel again together
with fp32 dK/dV accumulators; for each visited shard the partial state is recomputed under
``torch.enable_grad()`` and the merge identity is differentiated::

    w_j = exp(lse_j - lse)
    d out_j = w_j * dO          d lse_j = w_j * (rowsum(dO * (out_j - out)) + dlse)

then ``torch.autograd.grad`` gives the contributions to dq (local) and dk_j, dv_j (travelling).
After its last stop an accumulator goes straight home. Rows that attend to nothing get ``w_j = 0``:
output 0, lse ``-inf``, gradient 0, never NaN.

Failure: every wait is bounded (``timeout=`` or the process group's timeout); a peer that dies or
hangs raises :class:`~qkv.distributed.sharding.RingError` on the others, naming the rank, the step
and the peer.

Limits: no dropout; a score mod whose tensors require grad (e.g. a learnable ``qkv.mods.bias``) is declined
with a reason (detach it or use one process); forward and backward are collective: every rank of the group
must call them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch import Tensor

from .. import masks as _masks
from .. import mods as _mods
from ..core import attention, check_inputs, merge
from ..core.capture import captured_tensors
from ..core.lse import lse_dtype
from .agreement import check_same_problem
from .plan import FULL, RingPlan, plan_ring
from .sharding import LAYOUTS, RingError, check_layout, group_info, wait_all

__all__ = ["ring_attention", "RingError"]

_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_TAG_KV, _TAG_BWD_KV, _TAG_DKV, _TAG_HOME = 11, 12, 13, 14
#: one point-to-point message: (dist.isend or dist.irecv, tensor, group rank of the peer, tag)
_Op = tuple[Callable[..., Any], Tensor, int, int]
_LABELS = {_TAG_KV: "K/V", _TAG_BWD_KV: "K/V", _TAG_DKV: "the dK/dV accumulator", _TAG_HOME: "finished dK/dV"}


@dataclass(frozen=True)
class _Ring:
    """Everything one ring_attention call needs besides the tensors."""

    plan: RingPlan
    group: dist.ProcessGroup | None
    rank: int
    mask: _masks.MaskLike
    score_mod: _mods.ScoreModLike
    scale: float
    impl: str
    timeout: float | None
    nq: int
    nk: int
    d: int  # head dim of q and k; v follows it in the packed K/V buffer (B, Hkv, L, D + Dv)

    def peer(self, r: int) -> int:
        r %= self.plan.world_size
        return r if self.group is None else dist.get_global_rank(self.group, r)

    def post(self, ops, what: str):
        """Post ``[(dist.isend|dist.irecv, tensor, group_rank, tag), ...]``; return the work handles."""
        if not ops:
            return []
        try:
            return dist.batch_isend_irecv(
                [dist.P2POp(op, t, self.peer(r), group=self.group, tag=tag) for op, t, r, tag in ops]
            )
        except Exception as e:
            raise RingError(
                f"{what} could not be posted: a peer process died or the group is broken "
                f"({type(e).__name__}: {str(e).strip()[:400]})"
            ) from e

    def wait(self, works, what: str) -> None:
        wait_all(works, what, self.timeout)

    def describe(self, phase: str, step: int, ops) -> str:
        """``"ring_attention forward: rank 1 of 4, step 2 (send K/V to rank 2, receive K/V from rank 0)"``."""
        W = self.plan.world_size
        moves = ", ".join(
            f"{'send' if op is dist.isend else 'receive'} {_LABELS[tag]} "
            f"{'to' if op is dist.isend else 'from'} rank {peer % W}"
            for op, _, peer, tag in ops
        )
        return f"ring_attention {phase}: rank {self.rank} of {W}, step {step} ({moves})"

    def attend(self, q: Tensor, k: Tensor, v: Tensor, q0: int, k0: int, kind: int):
        """Partial state ``(out, lse)`` of queries starting at global ``q0`` against keys starting at ``k0``."""
        mask = None if kind == FULL else _masks.offset(self.mask, q0, k0, self.nq, self.nk)
        mod = _mods.offset(self.score_mod, q0, k0, self.nq, self.nk)
        return attention(q, k, v, mask=mask, score_mod=mod, scale=self.scale, impl=self.impl, return_lse=True)


def _pack(k: Tensor, v: Tensor, dtype=None) -> Tensor:
    """K and V in one contiguous buffer ``(B, Hkv, L, D + Dv)``: one message per hop."""
    return torch.cat([k, v], dim=-1).to(dtype or k.dtype).contiguous()


def _empty_kv(ring: _Ring, like: Tensor, j: int, dtype=None) -> Tensor:
    length = sum(n for _, n in ring.plan.kv_segments[j])
    return like.new_empty(like.shape[0], like.shape[1], length, like.shape[3], dtype=dtype or like.dtype)


def _forward(ring: _Ring, q: Tensor, kv_local: Tensor, dv: int):
    plan, r, W = ring.plan, ring.rank, ring.plan.world_size
    acc: list[tuple[Tensor, Tensor] | None] = [None] * len(plan.q_segments[r])  # running (out, lse) per query run
    cur: Tensor | None = kv_local
    for s in range(W):
        j = plan.holds(r, s)
        nj = plan.holds(r, s + 1)
        nxt = _empty_kv(ring, kv_local, nj) if nj is not None else None
        ops: list[_Op] = []
        if plan.forwards(r, s):
            assert cur is not None, "a rank forwards only a shard it holds"
            ops.append((dist.isend, cur, r + 1, _TAG_KV))
        if nxt is not None:
            ops.append((dist.irecv, nxt, r - 1, _TAG_KV))
        what = ring.describe("forward", s, ops)
        works = ring.post(ops, what)
        if j is not None:  # compute while the next shard is in flight
            assert cur is not None, "a rank holds a shard at every step it computes on one"
            for a, b, kind in plan.pairs(r, j):
                (qs, lq), qo = plan.q_segments[r][a], _offset(plan.q_segments[r], a)
                (ks, lk), ko = plan.kv_segments[j][b], _offset(plan.kv_segments[j], b)
                kv = cur[:, :, ko : ko + lk]  # (B, Hkv, lk, D + Dv)
                o, lse = ring.attend(q[:, :, qo : qo + lq], kv[..., : ring.d], kv[..., ring.d :], qs, ks, kind)
                part = (o.to(lse_dtype(q.dtype)), lse)
                prev = acc[a]
                acc[a] = part if prev is None else merge([prev, part])
        ring.wait(works, what)
        cur = nxt
    B, Hq = q.shape[:2]
    outs, lses = [], []
    for (_, lq), state in zip(plan.q_segments[r], acc):
        if state is None:  # nothing to attend: out 0, lse -inf
            outs.append(q.new_zeros(B, Hq, lq, dv))
            lses.append(torch.full((B, Hq, lq), float("-inf"), dtype=lse_dtype(q.dtype), device=q.device))
        else:
            outs.append(state[0].to(q.dtype))
            lses.append(state[1].to(lse_dtype(q.dtype)))
    return torch.cat(outs, dim=2), torch.cat(lses, dim=2)  # (B, Hq, Lq, Dv), (B, Hq, Lq)


def _offset(segs, a: int) -> int:
    """Local offset of run ``a`` in a rank's tensor."""
    return sum(n for _, n in segs[:a])


def _shard_grads(ring: _Ring, q, kv, j, out, lse, dout, dlse, dq):
    """Add this rank's gradient contributions for K/V shard ``j`` to ``dq`` (in place); return dK/dV packed."""
    plan, r, d = ring.plan, ring.rank, ring.d
    dkv = torch.zeros(kv.shape, dtype=dq.dtype, device=kv.device)  # (B, Hkv, L_j, D + Dv)
    for a, b, kind in plan.pairs(r, j):
        (qs, lq), qo = plan.q_segments[r][a], _offset(plan.q_segments[r], a)
        (ks, lk), ko = plan.kv_segments[j][b], _offset(plan.kv_segments[j], b)
        qa = q[:, :, qo : qo + lq].detach().requires_grad_()
        kb = kv[:, :, ko : ko + lk, :d].detach().requires_grad_()
        vb = kv[:, :, ko : ko + lk, d:].detach().requires_grad_()
        with torch.enable_grad():
            o, lse_j = ring.attend(qa, kb, vb, qs, ks, kind)
        if lse_j.grad_fn is None:
            raise ValueError(
                f"impl={ring.impl!r} returned an lse without gradient; ring_attention's backward "
                "differentiates lse. Use impl='reference' or an implementation with lse autograd."
            )
        lse_all, out_a = lse[:, :, qo : qo + lq], out[:, :, qo : qo + lq]
        do_a, dlse_a = dout[:, :, qo : qo + lq], dlse[:, :, qo : qo + lq]
        finite = torch.isfinite(lse_j)
        w = torch.where(finite, torch.exp(torch.where(finite, lse_j.detach() - lse_all, 0.0)), 0.0)  # (B, Hq, lq)
        g_out = (w[..., None] * do_a).to(o.dtype)
        g_lse = w * ((do_a * (o.detach().to(do_a.dtype) - out_a)).sum(-1) + dlse_a)
        gq, gk, gv = torch.autograd.grad((o, lse_j), (qa, kb, vb), (g_out, g_lse.to(lse_j.dtype)))
        dq[:, :, qo : qo + lq] += gq
        dkv[:, :, ko : ko + lk, :d] += gk
        dkv[:, :, ko : ko + lk, d:] += gv
    return dkv


def _backward(ring: _Ring, q, kv_local, out, lse, dout, dlse):
    plan, r, W = ring.plan, ring.rank, ring.plan.world_size
    acc = lse_dtype(q.dtype)
    dq = torch.zeros(q.shape, dtype=acc, device=q.device)
    out, dout = out.to(acc), dout.to(acc)
    dlse = torch.zeros_like(lse) if dlse is None else dlse.to(lse.dtype)
    cur: Tensor | None = kv_local
    dkv_in: Tensor | None = None
    dkv_in_works: list[Any] = []
    home: Tensor | None = None
    home_works: list[Any] = []
    sends: list[tuple[Any, Tensor]] = []  # (work, tensor) kept alive until waited
    for s in range(W):
        j, nj = plan.holds(r, s), plan.holds(r, s + 1)
        nxt = _empty_kv(ring, kv_local, nj) if nj is not None else None
        ops: list[_Op] = []
        if plan.forwards(r, s):
            assert cur is not None, "a rank forwards only a shard it holds"
            ops.append((dist.isend, cur, r + 1, _TAG_BWD_KV))
        if nxt is not None:
            ops.append((dist.irecv, nxt, r - 1, _TAG_BWD_KV))
        what = ring.describe("backward", s, ops)
        kv_works = ring.post(ops, what)
        ops = []
        if j is not None:
            dkv = _shard_grads(ring, q, cur, j, out, lse, dout, dlse, dq)  # while K/V are in flight
            if s > 0:
                ring.wait(
                    dkv_in_works,
                    f"ring_attention backward: rank {r} of {W}, step {s} (receive the "
                    f"dK/dV accumulator of shard {j} from rank {(r - 1) % W})",
                )
                dkv += dkv_in
            if plan.forwards(r, s):
                ops.append((dist.isend, dkv, r + 1, _TAG_DKV))
            elif s > 0:  # last stop: the finished accumulator goes straight home
                ops.append((dist.isend, dkv, j, _TAG_HOME))
            else:  # the shard never left home
                home = dkv
        if nj is not None:
            dkv_in = _empty_kv(ring, kv_local, nj, dtype=acc)
            ops.append((dist.irecv, dkv_in, r - 1, _TAG_DKV))
        if plan.hops[r] > 0 and s == plan.hops[r]:
            home = _empty_kv(ring, kv_local, r, dtype=acc)
            ops.append((dist.irecv, home, plan.last_holder(r), _TAG_HOME))
        what2 = ring.describe("backward", s, ops)
        works = ring.post(ops, what2)
        ring.wait([w for w, _ in sends], what2)  # the previous step's accumulator sends
        sends = [(w, t) for (op, t, _, _), w in zip(ops, works) if op is dist.isend]
        dkv_in_works = _recv_works(ops, works, _TAG_DKV)
        home_works += _recv_works(ops, works, _TAG_HOME)
        ring.wait(kv_works, what)
        cur = nxt
    ring.wait(
        [w for w, _ in sends] + home_works,
        f"ring_attention backward: rank {r} of {W}, end (receive the finished dK/dV of its shard from "
        f"rank {plan.last_holder(r)})",
    )
    return dq.to(q.dtype), home


def _recv_works(ops, works, tag: int):
    return [w for (op, _, _, t), w in zip(ops, works) if op is dist.irecv and t == tag]


class _RingFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, ring):
        kv = _pack(k, v)
        out, lse = _forward(ring, q, kv, v.shape[-1])
        ctx.ring = ring
        ctx.save_for_backward(q, k, v, out, lse)
        return out, lse

    @staticmethod
    def backward(ctx, dout, dlse):
        q, k, v, out, lse = ctx.saved_tensors
        dq, dkv = _backward(ctx.ring, q, _pack(k, v), out, lse, dout, dlse)
        d = k.shape[-1]
        return dq, dkv[..., :d].to(k.dtype), dkv[..., d:].to(v.dtype), None


def _exchange_meta(q, k, v, layout, group, rank, W, timeout):
    """All-gather every rank's lengths and shapes; the same ValueError on every rank if they disagree."""
    dtype_code = _DTYPES.index(q.dtype) if q.dtype in _DTYPES else -1
    meta = torch.tensor(
        [
            q.shape[2],
            k.shape[2],
            q.shape[0],
            q.shape[1],
            k.shape[1],
            q.shape[3],
            v.shape[3],
            dtype_code,
            LAYOUTS.index(layout),
        ],
        dtype=torch.int64,
        device=q.device,
    )
    metas = [torch.empty_like(meta) for _ in range(W)]
    wait_all(
        [dist.all_gather(metas, meta, group=group, async_op=True)],
        f"ring_attention: rank {rank} of {W} exchanging shard shapes",
        timeout,
    )
    rows = [m.tolist() for m in metas]
    names = ("B", "Hq", "Hkv", "D", "Dv", "dtype", "layout")
    for i, nm in enumerate(names, start=2):
        vals = [row[i] for row in rows]
        if len(set(vals)) > 1:
            if nm == "dtype":  # codes -> names: [torch.float32, torch.bfloat16], not [2, 1]
                vals = "[" + ", ".join(str(_DTYPES[c]) if 0 <= c < len(_DTYPES) else "?" for c in vals) + "]"
            elif nm == "layout":
                vals = [LAYOUTS[c] for c in vals]
            raise ValueError(
                f"ring_attention: ranks disagree on {nm}: {vals} (rank order); every rank must pass "
                "q, k, v with the same batch, heads, head dims and dtype, and the same layout"
            )
    return [row[0] for row in rows], [row[1] for row in rows]


def ring_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    group=None,
    mask=None,
    score_mod=None,
    scale: float | None = None,
    return_lse: bool = False,
    layout: str = "contiguous",
    impl: str = "auto",
    timeout: float | None = None,
):
    """Exact attention over a sequence sharded across the ranks of ``group`` (a collective call).

    Each rank passes the q, k, v of its own positions; the result equals ``qkv.attention`` on the
    whole sequence, restricted to those positions. Shapes: q ``(B, Hq, Lq, D)``, k ``(B, Hkv, Lk, D)``,
    v ``(B, Hkv, Lk, Dv)`` -> out ``(B, Hq, Lq, Dv)``, lse ``(B, Hq, Lq)``; ``Lq``/``Lk`` are local lengths
    (they may differ between ranks for ``layout="contiguous"``; the global lengths ``Nq``/``Nk`` are
    their sums); ``Hq % Hkv == 0`` (GQA: only ``Hkv`` heads travel).

    Args:
        q, k, v: this rank's shards (see :func:`qkv.distributed.shard`).
        group: process group (default: the world).
        mask: mask of the GLOBAL ``Nq x Nk`` problem (``qkv.masks``; causal alignment as in
            ``qkv.attention``: with ``Nq != Nk``, ``bottom_right`` and ``top_left`` differ).
        score_mod: score mod in global positions (e.g. ``qkv.mods.alibi``). Its parameters get no gradient.
        scale: factor on ``q @ k^T``; default ``1 / sqrt(D)``.
        return_lse: also return the log-sum-exp (float32; float64 for float64), differentiable.
        layout: how the shards were cut: ``"contiguous"`` or ``"zigzag"`` (load-balanced for causal masks).
        impl: attention implementation for each shard pair (``"auto"`` or a name from ``qkv.implementations()``).
        timeout: seconds to wait for a peer at each step (default: the process group's timeout).

    Returns:
        ``out``, or ``(out, lse)`` when ``return_lse``.

    Raises:
        ValueError: bad inputs, ranks that disagree on shapes/dtype/layout or on the mask, score mod or scale
            (:mod:`qkv.distributed.agreement`), or torch.distributed not initialised.
        RingError: a peer process died, hung or timed out (within ``timeout``; never a hang).

    Example (spawns processes, so not a doctest)::

        import torch, qkv
        from qkv.distributed import launch, ring_attention, shard, gather
        def job(rank, world):  # at module level, so that the spawned processes can import it
            torch.manual_seed(0)
            q, k, v = (torch.randn(1, 4, 1000, 64) for _ in range(3))  # the whole sequence
            loc = [shard(x, 2, layout="zigzag") for x in (q, k, v)]
            out = ring_attention(*loc, mask=qkv.masks.causal(), layout="zigzag")
            return gather(out, 2, layout="zigzag")
        outs = launch.spawn(job, world_size=4)
    """
    rank, W = group_info(group)
    check_layout(layout)
    inp = check_inputs(q, k, v, scale=scale)
    if not isinstance(impl, str):
        raise ValueError(f"impl must be a string such as 'auto' or 'reference', got {type(impl).__name__}")
    if timeout is not None and not (isinstance(timeout, (int, float)) and timeout > 0):
        raise ValueError(f"timeout must be a positive number of seconds or None, got {timeout!r}")
    q_lengths, kv_lengths = _exchange_meta(q, k, v, layout, group, rank, W, timeout)
    mask = _masks.as_mask(mask)
    nq, nk = sum(q_lengths), sum(kv_lengths)
    score_mod = _mods.as_mod(score_mod)
    # first: ranks given different problems would otherwise end in a timeout that blames a peer
    check_same_problem(
        {"mask": mask, "score_mod": score_mod, "scale": inp.scale},
        group=group,
        rank=rank,
        world=W,
        device=q.device,
        timeout=timeout,
    )
    try:
        if mask is not None:
            mask.check(q.shape[0], q.shape[1], nq, nk)
        if score_mod is not None:
            score_mod.check(q.shape[0], q.shape[1], nq, nk)
    except ValueError as e:
        raise ValueError(f"ring_attention (global problem {nq} x {nk}): {e}") from None
    if torch.is_grad_enabled() and captured_tensors(score_mod, q.shape[0], q.shape[1], nq, nk, q.dtype, q.device):
        raise ValueError(
            f"ring_attention cannot pass gradients to tensors the score mod {score_mod!r} computes "
            "with (they would need an all-reduce across ranks); detach them, run under "
            "torch.no_grad(), or use qkv.attention on one process"
        )
    plan = plan_ring(mask, q_lengths, kv_lengths, layout)
    ring = _Ring(plan, group, rank, mask, score_mod, inp.scale, impl, timeout, nq, nk, q.shape[3])
    out, lse = _RingFunction.apply(q, k, v, ring)
    return (out, lse) if return_lse else out
