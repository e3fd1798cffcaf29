"""Correctness of every engine against an fp64 reference on one device (a section of ``bench/gpu.py``).

For every case (a mask family, a composition or a score mod, with GQA and one ``Lq != Lk`` case) and dtype, each
registered engine and ``auto`` runs what it declares to support -- forward, backward (gradients of q, k, v and
of a bias the score mod holds) and the log-sum-exp where declared -- and is checked by FlashAttention's rule:
``|engine - fp64| <= 2 |plain - fp64| + floor`` (max over entries), where *plain* is the naive computation in
the input dtype (scores and ``P @ V`` in that dtype, softmax in fp32: FlashAttention's ``upcast=False``
baseline) and ``floor = 1e-5 * max|fp64|`` (the GPU floor of the tests). An engine that declines the inputs
is listed with its reason.

Shapes: q ``(B, Hq, Lq, D)``, k/v ``(B, Hkv, Lk, D)``.
"""

from __future__ import annotations

import math
import time

import torch

import qkv
from qkv import masks, mods
from qkv.core import registry
from qkv.core.inputs import check_inputs
from qkv.core.mods import apply as apply_mod

__all__ = ["CASES", "cases", "check_case", "plain_attention"]

F64 = torch.float64
FLOOR = 1e-5  #: relative to the largest reference entry: GPU kernels use exp2 and other reduction orders


def _doc_ids(n: int, docs: int, device) -> torch.Tensor:
    return (torch.arange(n, device=device) * docs) // n  # sorted ids: packed sequences


def cases(L: int, device) -> list[tuple[str, int, int, object, object]]:
    """``[(name, Lq, Lk, mask, mod_factory)]``; ``mod_factory(Hq, device) -> (mod, mod64, bias or None)``."""
    w = max(L // 8, 4)

    def alibi(H, dev):
        return mods.alibi(mods.alibi_slopes(H).to(dev)), mods.alibi(mods.alibi_slopes(H).to(dev)), None

    def softcap(H, dev):
        return mods.softcap(2.0), mods.softcap(2.0), None

    def bias(H, dev):
        t = torch.randn(1, H, L, L, device=dev, generator=torch.Generator(dev).manual_seed(3))
        b32, b64 = t.clone().requires_grad_(), t.double().requires_grad_()
        return mods.bias(b32), mods.bias(b64), (b32, b64)

    ids = _doc_ids(L, 5, device)
    either = (masks.document(ids) | masks.sliding_window(w, w)) & ~masks.causal("top_left")
    return [  # most telling first: a run cut short by its time budget loses the last ones
        ("causal", L, L, masks.causal(), None),
        ("document & causal", L, L, masks.document(ids) & masks.causal(), None),
        ("window", L, L, masks.sliding_window(w), None),
        ("causal + alibi", L, L, masks.causal(), alibi),
        ("causal + bias (grad)", L, L, masks.causal(), bias),
        ("window + softcap", L, L, masks.sliding_window(w), softcap),
        ("prefix_lm", L, L, masks.prefix_lm(L // 4), None),
        ("global_window", L, L, masks.global_window(3, w), None),
        ("(document | window) & ~causal(top_left)", L, L, either, None),
        ("causal Lq<Lk (bottom_right)", max(L // 3, 1), L, masks.causal(), None),
    ]


#: The cases also checked in bf16 (each is a FlexAttention compile: a few seconds on a GPU).
BF16_CASES = ("causal", "document & causal", "causal + alibi")
CASES = [name for name, *_ in cases(64, "cpu")]


def plain_attention(q, k, v, mask, mod, scale):
    """``(out, lse)`` computed naively in ``q.dtype`` (softmax in fp32), differentiable; the FA rule's baseline."""
    B, Hq, Lq, _ = q.shape
    Lk, G = k.shape[2], Hq // k.shape[1]
    k, v = k.repeat_interleave(G, dim=1), v.repeat_interleave(G, dim=1)  # (B, Hq, Lk, D)
    s = ((q @ k.transpose(-1, -2)) * scale).float()  # (B, Hq, Lq, Lk)
    if mod is not None:
        b, h, qi, ki = (
            torch.arange(n, device=q.device).view([-1 if d == i else 1 for d in range(4)])
            for i, n in enumerate((B, Hq, Lq, Lk))
        )
        s = apply_mod(mod, s.to(torch.float64 if q.dtype == F64 else torch.float32), b, h, qi, ki, Lq, Lk)
    if mask is not None:
        s = s.masked_fill(~mask.dense(B, Hq, Lq, Lk, q.device), float("-inf"))
    lse = torch.logsumexp(s, dim=-1)
    p = torch.softmax(s, dim=-1).nan_to_num(0.0).to(q.dtype)
    return p @ v, lse


def _err(a, b) -> float:
    """max |a - b| with equal infinities equal; inf where the patterns of infinities or NaN differ."""
    a, b = a.double(), b.double()
    if not torch.equal(torch.isinf(a), torch.isinf(b)) or bool(torch.isnan(a).any()):
        return float("inf")
    fin = torch.isfinite(b)
    return float((a[fin] - b[fin]).abs().max()) if bool(fin.any()) else 0.0


def _what(impl: str, inp_args: dict, dev_grads: bool) -> tuple[bool, bool, list[str]]:
    """``(grads, lse, reasons)``: the most the engine declares for these inputs (reasons when nothing)."""
    reasons = []
    for grads, lse in ((True, True), (True, False), (False, True), (False, False)):
        if grads and not dev_grads:
            continue
        q = inp_args["q"].detach().requires_grad_(grads)
        with torch.set_grad_enabled(grads):
            inp = check_inputs(
                q, inp_args["k"], inp_args["v"], mask=inp_args["mask"], score_mod=inp_args["mod"], return_lse=lse
            )
            if impl == "auto":
                try:
                    registry.select("auto", inp)
                    return grads, lse, []
                except ValueError as e:
                    reasons = [str(e)]
                    continue
            why = registry.get(impl).not_supported_reasons(inp)
        if not why:
            return grads, lse, []
        reasons = reasons or why
    return False, False, reasons


def _run(fn, q, k, v, extra, dout, dlse, grads: bool, lse: bool):
    """``(out, lse or None, [grads])`` of ``fn`` for the loss ``sum(out * dout) + sum(finite lse * dlse)``."""
    q, k, v = (t.detach().requires_grad_(grads) for t in (q, k, v))
    with torch.set_grad_enabled(grads):
        out, ls = fn(q, k, v)
        if not grads:
            return out.detach(), None if ls is None or not lse else ls.detach(), []
        loss = (out.double() * dout).sum()
        if lse and ls is not None:
            loss = loss + (torch.where(torch.isfinite(ls), ls, 0).double() * dlse).sum()
        for t in extra:
            t.grad = None
        g = torch.autograd.grad(loss, [q, k, v, *extra], allow_unused=True)
    return out.detach(), None if not lse else ls.detach(), [None if x is None else x.detach() for x in g]


def check_case(name, Lq, Lk, mask, mod_factory, dtype, device, *, Hq=8, Hkv=2, D=64, engines=None) -> list[dict]:
    """One row per engine: ``{"case", "dtype", "engine", "checked", "ok", "worst", "detail", "s"}``."""
    g = torch.Generator(device).manual_seed(0)
    q64, k64, v64 = (
        torch.randn(1, h, n, D, device=device, dtype=F64, generator=g) for h, n in ((Hq, Lq), (Hkv, Lk), (Hkv, Lk))
    )
    dout = torch.randn(1, Hq, Lq, D, device=device, dtype=F64, generator=g)
    dlse = torch.randn(1, Hq, Lq, device=device, dtype=F64, generator=g)
    mod, mod64, bias = mod_factory(Hq, device) if mod_factory else (None, None, None)
    extra, extra64 = ((bias[0],), (bias[1],)) if bias else ((), ())
    scale = 1 / math.sqrt(D)
    q, k, v = (t.to(dtype) for t in (q64, k64, v64))
    oracles = {}  # lse in the loss or not -> (fp64 reference, plain low precision): the engines' gradients differ

    def ref_plain(lse: bool):
        if lse not in oracles:
            r = _run(
                lambda a, b, c: plain_attention(a, b, c, mask, mod64, scale),
                q64,
                k64,
                v64,
                extra64,
                dout,
                dlse,
                True,
                lse,
            )
            p = _run(lambda a, b, c: plain_attention(a, b, c, mask, mod, scale), q, k, v, extra, dout, dlse, True, lse)
            oracles[lse] = (r, p)
        return oracles[lse]

    rows = []
    dev_grads = True
    for impl in engines or ["auto", *qkv.implementations()]:
        t0 = time.perf_counter()
        row = {"case": name, "dtype": str(dtype).replace("torch.", ""), "engine": impl}
        grads, lse, why = _what(impl, {"q": q, "k": k, "v": v, "mask": mask, "mod": mod}, dev_grads)
        if why:
            rows.append(dict(row, checked="declined", ok=None, worst="", detail=why[0][:200], s=0.0))
            continue
        chosen = impl if impl != "auto" else _chosen(q, k, v, mask, mod, grads, lse)
        try:
            got = _run(lambda a, b, c: _qkv(a, b, c, mask, mod, impl, lse), q, k, v, extra, dout, dlse, grads, lse)
        except Exception as e:  # an engine that accepts inputs must run them: a failure is a finding
            rows.append(
                dict(
                    row,
                    checked="error",
                    ok=False,
                    worst="",
                    detail=f"{type(e).__name__}: {e}"[:300],
                    s=time.perf_counter() - t0,
                )
            )
            continue
        ref, plain = ref_plain(lse)
        names = ["out"] + (["lse"] if lse else []) + (["dq", "dk", "dv"] + ["dbias"] * len(extra) if grads else [])
        pairs = [(got[0], plain[0], ref[0])] + ([(got[1], plain[1], ref[1])] if lse else [])
        pairs += list(zip(got[2], plain[2], ref[2])) if grads else []
        worst, ok, detail = 0.0, True, []
        for nm, (a, p, r) in zip(names, pairs):
            if a is None:
                ok, detail = False, detail + [f"{nm}: no gradient"]
                continue
            err, base = _err(a, r), _err(p, r)
            floor = FLOOR * float(r[torch.isfinite(r)].abs().max()) if bool(torch.isfinite(r).any()) else FLOOR
            ratio = err / (2 * base + floor)
            worst = max(worst, ratio)
            if ratio > 1:
                ok = False
                detail.append(f"{nm}: err {err:.2e} > 2 x plain {base:.2e} + {floor:.1e}")
        checked = "+".join(["fwd"] + (["lse"] if lse else []) + (["bwd"] if grads else []))
        rows.append(
            dict(
                row,
                engine=impl if impl != "auto" else f"auto -> {chosen}",
                checked=checked,
                ok=ok,
                worst=f"{worst:.2f}",
                detail="; ".join(detail)[:300],
                s=time.perf_counter() - t0,
            )
        )
    return rows


def _qkv(q, k, v, mask, mod, impl, lse):
    res = qkv.attention(q, k, v, mask=mask, score_mod=mod, impl=impl, return_lse=lse)
    return res if lse else (res, None)


def _chosen(q, k, v, mask, mod, grads, lse) -> str:
    with torch.set_grad_enabled(grads):
        q = q.detach().requires_grad_(grads)
        return registry.select("auto", check_inputs(q, k, v, mask=mask, score_mod=mod, return_lse=lse)).name


def nonfinite_case(device, dtype=torch.float32, L=256, D=64) -> dict:
    """NaN in keys that a causal mask hides from every row but the last: only the last row may be NaN."""
    g = torch.Generator(device).manual_seed(0)
    q, k, v = (torch.randn(1, 4, L, D, device=device, dtype=dtype, generator=g) for _ in range(3))
    k[:, :, -1] = float("nan")
    rows = {}
    for impl in ("auto", *qkv.implementations()):
        try:
            out = qkv.attention(q, k, v, mask=masks.causal(), impl=impl)
        except ValueError as e:
            rows[impl] = f"declined ({str(e)[:80]})"
            continue
        except Exception as e:  # a finding
            rows[impl] = f"error {type(e).__name__}: {str(e)[:120]}"
            continue
        rows[impl] = _nan_verdict(out)
    try:  # FlexAttention itself, without qkv's guard: does its kernel let a NaN score through on this device?
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        bm = create_block_mask(lambda b, h, qi, ki: qi >= ki, None, None, L, L, device=device)
        out = torch.compile(flex_attention, dynamic=False)(q, k, v, block_mask=bm)
        rows["(Flex called directly, no qkv guard)"] = _nan_verdict(out).replace("WRONG: ", "")
    except Exception as e:  # informative only
        rows["(Flex called directly)"] = f"error {type(e).__name__}: {str(e)[:120]}"
    return rows


def _nan_verdict(out) -> str:
    nan_rows = torch.isnan(out).any(-1)[0, 0]  # (L,)
    good = bool(nan_rows[-1]) and not bool(nan_rows[:-1].any())
    return "ok" if good else f"WRONG: NaN rows {nan_rows.nonzero().flatten().tolist()[:8]}"
