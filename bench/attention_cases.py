"""The attention benchmark's cases and contenders (what runs inside one case process).

A case is ``(name, N, mode)`` with B=1, H=8, D=64, fp32; ``mode`` is ``fwd`` or ``fwdbwd``.
Contenders: every qkv implementation (``auto``, ``tiled``, ``sdpa``, ``reference``), torch SDPA
(default backend and math, given the equivalent mask), a naive ``softmax(q @ k^T * s) @ v`` and
FlexAttention under ``torch.compile`` (forward only: it has no CPU backward). A contender that
cannot run a case (unsupported, or it would need more memory than allowed) is skipped with the
reason.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

import qkv
from qkv.core import attention, check_inputs, registry

__all__ = ["CASES", "make_case", "contenders", "attended_pairs", "B", "H", "D"]

B, H, D = 1, 8, 64
WINDOW = 256
DOCS = 8
CASES = ["full", "causal", "window", "document", "causal_alibi"]


def _doc_ids(n: int) -> torch.Tensor:
    return torch.arange(n) // -(-n // DOCS)


def attended_pairs(case: str, n: int) -> int:
    """(query, key) pairs the case's mask keeps (per batch element and head)."""
    if case == "full":
        return n * n
    if case in ("causal", "causal_alibi"):
        return n * (n + 1) // 2
    if case == "window":
        return sum(min(i, WINDOW) + 1 for i in range(n))
    counts = torch.bincount(_doc_ids(n))
    return int((counts * counts).sum())


def make_case(case: str, n: int):
    """``(mask, score_mod)`` of qkv for the case (causal masks are square, so both alignments agree)."""
    if case == "full":
        return None, None
    if case == "causal":
        return qkv.masks.causal(), None
    if case == "window":
        return qkv.masks.sliding_window(WINDOW), None
    if case == "document":
        return qkv.masks.document(_doc_ids(n)), None
    if case == "causal_alibi":
        return qkv.masks.causal(), qkv.mods.alibi(qkv.mods.alibi_slopes(H))
    raise ValueError(f"unknown case {case!r}; known: {', '.join(CASES)}")


def _dense_bias(case: str, n: int) -> tuple[torch.Tensor | None, bool]:
    """The equivalent dense SDPA mask: ``(mask, is_causal)``; bool (1,1,N,N), or float (1,H,N,N) for ALiBi."""
    if case == "full":
        return None, False
    if case == "causal":
        return None, True
    mask, mod = make_case(case, n)
    allowed = mask.dense(1, 1, n, n)
    if mod is None:
        return allowed, False
    i = torch.arange(n).view(-1, 1)
    bias = -qkv.mods.alibi_slopes(H).view(1, H, 1, 1) * (i - torch.arange(n).view(1, -1)).abs().float()
    return bias.masked_fill(~allowed, float("-inf")), False


def _flex(case: str, n: int):
    """``fn(q, k, v)`` running FlexAttention compiled for CPU with the case's block mask and score mod."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    ids = _doc_ids(n)
    slopes = qkv.mods.alibi_slopes(H)
    mask_mods = {
        "full": None,
        "causal": lambda b, h, q, kv: q >= kv,
        "window": lambda b, h, q, kv: (q >= kv) & (q - kv <= WINDOW),
        "document": lambda b, h, q, kv: ids[q] == ids[kv],
        "causal_alibi": lambda b, h, q, kv: q >= kv,
    }
    score_mod = (lambda s, b, h, q, kv: s - slopes[h] * (q - kv)) if case == "causal_alibi" else None
    block_mask = None
    if mask_mods[case] is not None:
        block_mask = create_block_mask(mask_mods[case], None, None, n, n, device="cpu")
    compiled = torch.compile(flex_attention, dynamic=False)
    return lambda q, k, v: compiled(q, k, v, score_mod=score_mod, block_mask=block_mask)


def _naive(q, k, v, dense, is_causal):
    s = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(q.shape[-1]))
    if is_causal:
        n = s.shape[-1]
        s = s.masked_fill(~torch.ones(n, n, dtype=torch.bool).tril(), float("-inf"))
    elif dense is not None:
        s = s.masked_fill(~dense, float("-inf")) if dense.dtype == torch.bool else s + dense
    return torch.softmax(s, dim=-1) @ v


def contenders(case: str, n: int, mode: str, mem_limit: float, flex: bool):
    """``{name: fn(q, k, v) -> out}`` or ``{name: "skipped: reason"}`` for the case."""
    mask, mod = make_case(case, n)
    q = torch.zeros(B, H, n, D)
    out: dict[str, object] = {}
    square = 4.0 * B * H * n * n  # bytes of one fp32 Lq x Lk tensor over all heads
    grad = mode == "fwdbwd"

    def too_big(copies: float, what: str):
        need = copies * square
        if need > mem_limit:
            return f"skipped: {what} needs ~{need / 2**30:.1f} GiB (> --mem-gb {mem_limit / 2**30:.0f})"
        return None

    for impl in ["auto", *qkv.implementations()]:
        name = f"qkv {impl}"
        if impl != "auto":
            reasons = registry.get(impl).not_supported_reasons(check_inputs(q, q, q, mask=mask, score_mod=mod))
            if reasons:
                out[name] = "skipped: " + "; ".join(reasons)
                continue
        if impl == "reference":
            skip = too_big(12 if grad else 6, "the reference's Lq x Lk steps")
            if skip:
                out[name] = skip
                continue
        out[name] = (lambda impl: lambda q, k, v: attention(q, k, v, mask=mask, score_mod=mod, impl=impl))(impl)

    dense, is_causal = _dense_bias(case, n)
    dense_bytes = 0 if dense is None else dense.numel() * 4
    what = "a dense mask" if dense is not None else ""
    if dense is not None and dense_bytes > mem_limit / 2:
        out["torch sdpa"] = f"skipped: the dense mask takes {dense_bytes / 2**30:.1f} GiB"
    else:
        out["torch sdpa"] = lambda q, k, v: F.scaled_dot_product_attention(
            q, k, v, attn_mask=dense, is_causal=is_causal
        )
    skip = too_big(8 if grad else 4, "the math backend's Lq x Lk tensors")
    if skip:
        out["torch sdpa math"] = skip
    else:

        def math_sdpa(q, k, v):
            with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
                return F.scaled_dot_product_attention(q, k, v, attn_mask=dense, is_causal=is_causal)

        out["torch sdpa math"] = math_sdpa
    skip = too_big(8 if grad else 4, "softmax(q k^T) over Lq x Lk")
    out["naive"] = skip or (lambda q, k, v: _naive(q, k, v, dense, is_causal))
    if not flex:
        out["flex compiled"] = "skipped: --no-flex"
    elif grad:
        out["flex compiled"] = "skipped: FlexAttention has no CPU backward (it raises)"
    else:
        try:
            out["flex compiled"] = _flex(case, n)
        except Exception as e:  # pragma: no cover - depends on the machine's compiler
            out["flex compiled"] = f"skipped: {type(e).__name__}: {str(e).splitlines()[0][:150]}"
    out["_dense_note"] = what
    return out
