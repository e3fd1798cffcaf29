"""Jobs that the ring-attention tests run on spawned gloo processes (module level so children can import them).

Every job returns plain data (floats, strings); the test process asserts on it. The oracle is
single-process ``qkv.attention(..., impl="reference")`` on the whole sequence, in float64.
"""

from __future__ import annotations

import os
import time

import torch

import qkv
from qkv.distributed import RingError, gather, ring_attention, shard


def _doc_ids(n: int, sizes=(5, 11, 9, 12, 7)) -> torch.Tensor:
    ids, doc = [], 0
    while len(ids) < n:
        ids += [doc] * sizes[doc % len(sizes)]
        doc += 1
    return torch.tensor(ids[:n])


def cases() -> dict[str, dict]:
    """name -> problem: global lengths, heads, dims, mask and score mod, layout."""
    m = qkv.masks
    base = dict(B=1, hq=2, hkv=2, d=8, dv=8, nq=37, nk=37, mask=None, mod=None, layout="contiguous")
    spec = {
        "full": {},
        "causal_bottom_right_cross": dict(nq=23, nk=37, mask=m.causal("bottom_right")),
        "causal_top_left_cross": dict(nq=23, nk=37, mask=m.causal("top_left")),
        "causal_bottom_right_empty_rows": dict(nq=37, nk=23, mask=m.causal("bottom_right")),
        "causal_zigzag": dict(mask=m.causal(), layout="zigzag"),
        "causal_zigzag_cross": dict(nq=29, nk=41, mask=m.causal("top_left"), layout="zigzag"),
        "sliding_window": dict(mask=m.sliding_window(4)),
        "sliding_window_symmetric_zigzag": dict(mask=m.sliding_window(3, 2), layout="zigzag"),
        "document_causal": dict(mask=m.document(_doc_ids(37)) & m.causal()),
        "document_zigzag": dict(mask=m.document(_doc_ids(37)), layout="zigzag"),
        "alibi_causal": dict(hq=4, hkv=4, mask=m.causal(), mod=qkv.mods.alibi(qkv.mods.alibi_slopes(4))),
        "gqa_causal_zigzag": dict(hq=4, hkv=2, nq=40, nk=40, mask=m.causal(), layout="zigzag"),
        "mqa_full_dv": dict(hq=4, hkv=1, dv=6),
        "padding_empty_rows": dict(B=2, mask=m.padding(torch.tensor([30, 20]), torch.tensor([33, 25]))),
    }
    return {name: {**base, **over} for name, over in spec.items()}


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Max |a - b|; infinite entries must coincide (else inf); NaN anywhere gives NaN."""
    if torch.isnan(a).any() or torch.isnan(b).any():
        return float("nan")
    fa, fb = torch.isfinite(a), torch.isfinite(b)
    if not torch.equal(fa, fb) or not torch.equal(a[~fa], b[~fb]):
        return float("inf")
    return float((a[fa] - b[fb]).detach().abs().max()) if fa.any() else 0.0


def _loss(out, lse, dout, dlse):
    """A loss that exercises d(out) and d(lse); -inf lse rows contribute nothing."""
    return (out * dout).sum() + (torch.where(torch.isfinite(lse), lse, 0.0) * dlse).sum()


def compare_case(case: dict, impl: str, dtype=torch.float64) -> dict[str, float]:
    """Ring vs single-process reference for one case on this rank: max differences per quantity."""
    g = torch.Generator().manual_seed(1234)
    B, hq, hkv, d, dv, nq, nk = (case[x] for x in ("B", "hq", "hkv", "d", "dv", "nq", "nk"))
    q = torch.randn(B, hq, nq, d, generator=g, dtype=dtype)
    k = torch.randn(B, hkv, nk, d, generator=g, dtype=dtype)
    v = torch.randn(B, hkv, nk, dv, generator=g, dtype=dtype)
    dout = torch.randn(B, hq, nq, dv, generator=g, dtype=dtype)
    dlse = torch.randn(B, hq, nq, generator=g, dtype=dtype)
    mask, mod, layout = case["mask"], case["mod"], case["layout"]

    full = [x.clone().requires_grad_() for x in (q, k, v)]
    out_r, lse_r = qkv.attention(*full, mask=mask, score_mod=mod, impl="reference", return_lse=True)
    grads_r = torch.autograd.grad(_loss(out_r, lse_r, dout, dlse), full)

    loc = [shard(x, 2, layout=layout).detach().requires_grad_() for x in (q, k, v)]
    out, lse = ring_attention(*loc, mask=mask, score_mod=mod, return_lse=True, layout=layout, impl=impl)
    grads = torch.autograd.grad(_loss(out, lse, shard(dout, 2, layout=layout), shard(dlse, 2, layout=layout)), loc)

    res = {
        "out": _max_diff(out, shard(out_r, 2, layout=layout)),
        "lse": _max_diff(lse, shard(lse_r, 2, layout=layout)),
        "gathered_out": _max_diff(gather(out, 2, layout=layout), out_r),
    }
    for name, gr, gl in zip(("dq", "dk", "dv"), grads_r, grads):
        res[name] = _max_diff(gl, shard(gr, 2, layout=layout))
    res["empty_rows"] = float(torch.isinf(lse_r).sum())
    return res


def compare_all(rank: int, world: int, impls=("reference",), names=None) -> dict:
    """Every case (or ``names``) under every impl: ``{(impl, name): {quantity: max diff}}``."""
    torch.manual_seed(0)
    selected = cases() if names is None else {n: cases()[n] for n in names}
    return {(impl, name): compare_case(case, impl) for impl in impls for name, case in selected.items()}


def rank_dies_before_backward(rank: int, world: int, victim: int, timeout: float) -> dict:
    """Everyone runs the forward; ``victim`` exits abruptly; the others run backward and must fail fast."""
    case = cases()["full"]
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, case["nq"], 8, generator=g, dtype=torch.float64) for _ in range(3))
    loc = [shard(x, 2).requires_grad_() for x in (q.clone(), k.clone(), v.clone())]
    out = ring_attention(*loc, timeout=timeout)
    if rank == victim:
        os._exit(7)  # die without cleanup, like a crashed worker
    t0 = time.monotonic()
    try:
        out.sum().backward()
    except RingError as e:
        return {"error": type(e).__name__, "message": str(e), "elapsed": time.monotonic() - t0}
    return {"error": None, "message": "", "elapsed": time.monotonic() - t0}


def rank_hangs(rank: int, world: int, victim: int, timeout: float) -> dict:
    """``victim`` never joins the ring (it sleeps); the others must raise after about ``timeout`` seconds.

    The RingError is re-raised (with the elapsed time appended) so that the launcher sees a failure
    and kills the sleeper after its grace period instead of waiting for it.
    """
    if rank == victim:
        time.sleep(600)
    q = torch.randn(1, 2, 16, 8)
    t0 = time.monotonic()
    try:
        ring_attention(q, q, q, mask=qkv.masks.causal(), timeout=timeout)
    except RingError as e:
        raise RingError(f"{e} [raised after {time.monotonic() - t0:.3f} s]") from None
    return {"elapsed": time.monotonic() - t0}


def bad_shapes(rank: int, world: int) -> str:
    """Ranks pass different head dims: every rank must raise the same clear ValueError (no hang).

    Rank 0 returns the message; rank 1 lets the error propagate (the launcher must report it).
    """
    d = 8 if rank == 0 else 16
    q = torch.randn(1, 2, 5, d)
    try:
        ring_attention(q, q, q)
    except ValueError as e:
        if rank == 0:
            return str(e)
        raise
    return ""


def trainable_mod_is_declined(rank: int, world: int) -> str:
    """A score mod whose tensor requires grad: every rank declines with the same clear ValueError; under
    no_grad the same mod runs and matches one process."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 16, 8, dtype=torch.float64) for _ in range(3))
    table = torch.randn(32, dtype=torch.float64, requires_grad=True)

    def rel(s, b, h, qi, kv):
        return s + table[(qi - kv).clamp(-15, 16) + 15]

    loc = [shard(x, 2) for x in (q, k, v)]
    try:
        ring_attention(*loc, score_mod=rel)
        msg = ""
    except ValueError as e:
        msg = str(e)
    with torch.no_grad():
        out = gather(ring_attention(*loc, score_mod=rel), 2)
        ref = qkv.attention(q, k, v, score_mod=rel, impl="reference")
    return f"{msg}|{float((out - ref).abs().max())}"
