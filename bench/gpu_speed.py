"""Speed on one device (sections of ``bench/gpu.py``): attention kernels, and a transformers model.

* :func:`speed_rows` -- forward and forward+backward of one ``(B, H, N, D)`` problem for a mask (causal, window,
  document): qkv ``auto`` vs torch SDPA (flash backend; causal only -- flash takes no other mask) vs FlexAttention
  called directly with a ``BlockMask`` built by hand (``create_block_mask``) and ``torch.compile(flex_attention)``
  compiled once with torch.compile's defaults, the way its documentation shows (qkv's engine compiles the same
  way: automatic dynamic shapes after a second length). The
  first call of each contender (compile, BlockMask) is reported apart; then the median of a few timed calls.
* :func:`model_rows` -- a Mistral-like transformers model (random init) through ``attn_implementation="qkv"``
  vs ``"sdpa"``: forward, no grad, no cache.

Pairs/s counts the (query, key) pairs the mask keeps, times B x H; the fraction of peak counts
``4 * pairs * D`` FLOPs for the forward and 3.5x that for forward+backward (FlashAttention's accounting).
"""

from __future__ import annotations

import statistics
import time

import torch

import qkv
from qkv import masks
from qkv.core import registry
from qkv.core.inputs import check_inputs

__all__ = ["MASKS", "WINDOW", "DOCS", "pairs", "speed_rows", "model_rows", "MODEL"]

MASKS = ("causal", "window", "document")
WINDOW = 1024  #: keys per query of the window mask (the query's own key and 1,023 before it)
DOCS = 8  #: equal documents of the document mask


_FLEX = None  # flex_attention compiled once for every direct call


def doc_ids(n: int, device) -> torch.Tensor:
    return (torch.arange(n, device=device) * DOCS) // n


def pairs(mask: str, n: int) -> int:
    """(query, key) pairs the mask keeps in an ``n x n`` problem."""
    if mask == "causal":
        return n * (n + 1) // 2
    if mask == "window":
        w = min(WINDOW, n)
        return w * (w + 1) // 2 + (n - w) * w
    counts = torch.bincount(doc_ids(n, "cpu"))
    return int((counts * counts).sum())


def qkv_mask(mask: str, n: int, device):
    return {
        "causal": lambda: masks.causal(),
        "window": lambda: masks.sliding_window(WINDOW - 1),
        "document": lambda: masks.document(doc_ids(n, device)),
    }[mask]()


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _time(fn, device, reps: int, budget_s: float) -> tuple[float, float]:
    """``(first call s, median of up to reps timed calls s)``; stops early when ``budget_s`` is spent."""
    _sync(device)
    t = time.perf_counter()
    fn()
    _sync(device)
    first = time.perf_counter() - t
    times = []
    end = time.perf_counter() + budget_s
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
        if time.perf_counter() > end:
            break
    return first, statistics.median(times)


def _contenders(mask: str, n: int, H: int, device):
    """``{name: fn(q, k, v) -> out}`` (or a reason string when a contender does not apply)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    m = qkv_mask(mask, n, device)
    out = {"qkv auto": lambda q, k, v: qkv.attention(q, k, v, mask=m)}
    if mask == "causal" and torch.device(device).type == "cuda":

        def flash(q, k, v):
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)

        out["sdpa flash"] = flash
    elif mask == "causal":
        out["sdpa"] = lambda q, k, v: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    else:
        out["sdpa flash"] = "n/a: SDPA's flash kernel takes no mask but is_causal"
    ids = doc_ids(n, device)
    mask_mod = {
        "causal": lambda b, h, q, kv: q >= kv,
        "window": lambda b, h, q, kv: (q >= kv) & (q - kv < WINDOW),
        "document": lambda b, h, q, kv: ids[q] == ids[kv],
    }[mask]
    block_mask = create_block_mask(mask_mod, None, None, n, n, device=device)
    global _FLEX
    if _FLEX is None:  # as Flex's documentation shows: compiled once (torch.compile's defaults), reused
        _FLEX = torch.compile(flex_attention)
    out["flex direct"] = lambda q, k, v: _FLEX(q, k, v, block_mask=block_mask)
    return out


def speed_rows(mask: str, n: int, device, dtype, *, B=1, H=16, D=128, grads=True, reps=5, budget_s=20.0, peak=None):
    """One row per contender and mode (``fwd``, ``fwd+bwd``): ms, first-call s, pairs/s, fraction of peak."""
    g = torch.Generator(device).manual_seed(0)
    q, k, v = (torch.randn(B, H, n, D, device=device, dtype=dtype, generator=g).requires_grad_(grads) for _ in "qkv")
    dout = torch.randn(B, H, n, D, device=device, dtype=dtype, generator=g)
    npairs = B * H * pairs(mask, n)
    rows = []
    with torch.set_grad_enabled(grads):
        inp = check_inputs(q, k, v, mask=qkv_mask(mask, n, device))
        chosen = registry.select("auto", inp).name
    for name, fn in _contenders(mask, n, H, device).items():
        label = f"qkv auto ({chosen})" if name == "qkv auto" else name
        if isinstance(fn, str):
            rows.append({"mask": mask, "n": n, "contender": label, "mode": "-", "note": fn})
            continue
        modes = [("fwd", lambda fn=fn: fn(q, k, v))]
        if grads:

            def fwd_bwd(fn=fn):
                fn(q, k, v).backward(dout)
                for t in (q, k, v):
                    t.grad = None

            modes.append(("fwd+bwd", fwd_bwd))
        for mode, call in modes:
            try:
                first, t = _time(call, device, reps, budget_s)
            except Exception as e:  # a finding: record it and go on
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                rows.append(
                    {
                        "mask": mask,
                        "n": n,
                        "contender": label,
                        "mode": mode,
                        "note": f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}",
                    }
                )
                continue
            flops = 4 * npairs * D * (3.5 if mode == "fwd+bwd" else 1.0)
            rows.append(
                {
                    "mask": mask,
                    "n": n,
                    "contender": label,
                    "mode": mode,
                    "ms": t * 1e3,
                    "first_s": first,
                    "pairs_per_s": npairs / t,
                    "peak": None if not peak else flops / t / peak,
                }
            )
    return rows


#: The Mistral-like model (random init): 8 layers, hidden 1024, 16 query / 4 key-value heads of 64, window 4096.
MODEL = dict(
    vocab_size=1000,
    hidden_size=1024,
    intermediate_size=3584,
    num_hidden_layers=8,
    num_attention_heads=16,
    num_key_value_heads=4,
    head_dim=64,
    sliding_window=4096,
    max_position_embeddings=65536,
)


def model_rows(length: int, device, dtype, *, reps=3, budget_s=20.0, model_cfg=None) -> list[dict]:
    """``[{impl, ms, first_s, max_diff}]`` for "qkv" and "sdpa" on one seeded model and one random sequence."""
    from transformers import MistralConfig, MistralModel

    import qkv.hf  # noqa: F401 -- registers attn_implementation="qkv"

    cfg = dict(MODEL, **(model_cfg or {}))
    torch.manual_seed(0)
    with torch.device(device):  # initialised where it runs (no CPU init, no copy)
        model = MistralModel(MistralConfig(**cfg, attn_implementation="sdpa")).to(dtype=dtype).eval()
    ids = torch.randint(0, cfg["vocab_size"], (1, length), generator=torch.Generator().manual_seed(1)).to(device)
    rows, outs = [], {}
    for impl in ("qkv", "sdpa"):
        model.set_attn_implementation(impl)  # the same weights through either attention
        res = {}

        def fwd(res=res):
            res["h"] = model(input_ids=ids, use_cache=False).last_hidden_state

        try:
            with torch.no_grad():
                first, t = _time(fwd, device, reps, budget_s)
        except Exception as e:  # a finding
            rows.append({"impl": impl, "note": f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"})
            continue
        outs[impl] = res["h"].float()
        rows.append({"impl": impl, "ms": t * 1e3, "first_s": first})
    if len(outs) == 2:
        diff = float((outs["qkv"] - outs["sdpa"]).abs().max())
        scale = float(outs["sdpa"].abs().max())
        for r in rows:
            r["max_diff"] = f"{diff:.3g} (max |h| {scale:.3g})"
    return rows
