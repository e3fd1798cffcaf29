"""``impl="flex"``: PyTorch's FlexAttention (a compiled kernel) fed by qkv's mask descriptions.

FlexAttention computes ``softmax(score_mod(q @ k^T * scale))`` restricted by a ``BlockMask``: per
``128 x 128`` tile, the key blocks of each query-block row that are PARTIAL (``mask_mod`` evaluated) and
FULL (no mask work); every other tile is skipped. Its users build that structure themselves, and
``create_block_mask`` evaluates the mask on every (query, key) pair. qkv's masks already know their block
map in closed form (:meth:`qkv.masks.Mask.block_map`), so this engine

* builds the ``BlockMask`` from the block map (``BlockMask.from_kv_blocks``: O(blocks), no O(Lq x Lk) work
  for a closed-form mask), cached per mask fingerprint and shape like the tiled engine's plan;
* passes the mask as ``mask_mod`` (``mask.evaluate``) and the score mod as ``score_mod`` -- qkv's mods
  already have Flex's signature ``(score, b, h, q_idx, kv_idx)``, and gradients reach the tensors they
  capture (Flex differentiates captured buffers);
* compiles ``flex_attention`` once (``torch.compile``, ``fullgraph``; on CUDA with automatic dynamic shapes, on
  CPU static): torch.compile recompiles when the structure changes (another mask kind, another window width) and
  for a new length (on CUDA only once: the second length compiles symbolic lengths), not for a new mask object
  of the same structure or new document ids / slopes / bias values;
* declares what Flex cannot do (dropout, float64, empty problems; on CPU: gradients and the log-sum-exp,
  which compiled Flex does not provide there) so that ``auto`` never picks it for them.

A query row that attends nothing gives output 0 and lse ``-inf`` (Flex's own rule, the qkv contract);
NaN/inf in the inputs follow qkv's one rule (:mod:`qkv.core.nonfinite`), applied around every engine by
:func:`qkv.attention`. fp16/bf16 run in the input dtype with fp32 accumulation inside the kernel.

Shape legend: q ``(B, Hq, Lq, D)``, k ``(B, Hkv, Lk, D)``, v ``(B, Hkv, Lk, Dv)`` -> out
``(B, Hq, Lq, Dv)``, lse ``(B, Hq, Lq)``.

Example (CPU: forward only; compiling takes a few seconds):
    >>> import torch
    >>> from qkv import attention, implementations, masks
    >>> q, k, v = (torch.randn(1, 2, 200, 16) for _ in range(3))
    >>> "flex" in implementations()
    True
    >>> out = attention(q, k, v, mask=masks.sliding_window(32), impl="flex")
    >>> ref = attention(q, k, v, mask=masks.sliding_window(32), impl="reference")
    >>> bool(torch.allclose(out, ref, atol=1e-5))
    True
"""

from __future__ import annotations

import copy
from collections import OrderedDict

import torch
from torch import Tensor

from .. import mods as _mods
from ..inputs import AttentionInputs
from ..mask_base import FULL, PARTIAL

__all__ = [
    "flex_forward",
    "flex_reasons",
    "flex_unavailable",
    "block_mask_for",
    "on_device",
    "kv_blocks",
    "BLOCK",
    "FLEX_DTYPES",
]

#: Flex's tile (query and key block size) -- its default ``_DEFAULT_SPARSE_BLOCK_SIZE``.
BLOCK = 128
#: What FlexAttention computes (its CPU path refuses float64; its Triton path is not measured on it).
FLEX_DTYPES = frozenset({torch.float16, torch.bfloat16, torch.float32})
#: torch.compile's limit of recompilations of ``flex_attention`` (dynamo's default is 8), raised to this on the
#: first use: each mask structure and shape is one; past the limit torch.compile would run Flex's O(Lq x Lk)
#: eager path.
RECOMPILE_LIMIT = 128

_CACHE: "OrderedDict[tuple, tuple]" = OrderedDict()  # (mask fingerprint, sizes, device) -> (mask, BlockMask)
_CACHE_SIZE = 16
_compiled: dict = {}  # dynamic shapes or not -> compiled flex_attention
_STATIC_ONLY: set = set()  # non-empty once a dynamic-shape compile failed where a static one worked


def flex_unavailable() -> str | None:
    """Why FlexAttention cannot be used in this torch (None: it can)."""
    try:
        from torch.nn.attention.flex_attention import BlockMask, flex_attention  # noqa: F401
    except ImportError as e:  # pragma: no cover - torch < 2.5
        return f"torch.nn.attention.flex_attention does not import ({e}); upgrade torch to >= 2.5"
    return None


def _flex(dynamic: bool):
    """``flex_attention`` compiled once per kind: the whole graph (a graph break fails instead of running Flex's
    eager O(Lq x Lk) path), with torch.compile's automatic dynamic shapes (``dynamic``: the first length compiles
    static, a second one recompiles with symbolic lengths, later lengths reuse it -- a KV cache growing by one key
    per step, prompts of every length; measured on CPU: 2 compiles for lengths 200, 300, 420, 1000, 130) or with
    static shapes only (one compile per length)."""
    if dynamic not in _compiled:
        from torch.nn.attention.flex_attention import flex_attention

        _compiled[dynamic] = torch.compile(flex_attention, fullgraph=True, dynamic=None if dynamic else False)
        # Raised once, globally (a per-call config.patch cost ~0.5 ms): one compile per mask structure and shape.
        for name, value in (("recompile_limit", RECOMPILE_LIMIT), ("accumulated_recompile_limit", 8 * RECOMPILE_LIMIT)):
            if hasattr(torch._dynamo.config, name):
                setattr(torch._dynamo.config, name, max(value, getattr(torch._dynamo.config, name)))
    return _compiled[dynamic]


def flex_reasons(inp: AttentionInputs) -> list[str]:
    """Limits of FlexAttention that a :class:`~qkv.core.registry.Supports` declaration cannot express
    (they depend on the device or the head size)."""
    why = []
    if inp.device_type == "cpu":
        if inp.needs_grad:
            why.append("FlexAttention does not support backward on CPU; use impl='tiled' for training on CPU")
        if inp.return_lse:
            why.append(
                "FlexAttention compiled on CPU does not return the log-sum-exp (return_lse=True); use impl='tiled'"
            )
    elif min(inp.D, inp.Dv) < 16:
        why.append(f"FlexAttention's GPU kernel needs head_dim >= 16, got D={inp.D}, Dv={inp.Dv}; use impl='tiled'")
    return why


def kv_blocks(kinds: Tensor) -> tuple[Tensor, Tensor]:
    """``(num (..., nq) int32, indices (..., nq, nk) int32)``: per query-block row, how many key blocks
    ``kinds`` (bool ``(..., nq, nk)``) selects and their indices first (ascending), as ``BlockMask`` takes them."""
    num = kinds.sum(-1, dtype=torch.int32)
    indices = torch.argsort(kinds.to(torch.int8), dim=-1, descending=True, stable=True).to(torch.int32)
    return num, indices


def _mask_mod(mask, lq: int, lk: int):
    def mask_mod(b, h, q_idx, kv_idx):
        return mask.evaluate(b, h, q_idx, kv_idx, lq, lk)

    return mask_mod


def _score_mod(mod, lq: int, lk: int):
    """Flex's ``score_mod``: qkv's mod, and ``+inf`` where the raw score is not finite (a NaN/inf in q or k) or
    the mod made a NaN.

    FlexAttention treats a NaN score like a masked one (measured on CPU: a NaN key or query leaves every row
    finite), so its output would not reveal it. As ``+inf`` it makes exactly the rows that attend it NaN (a
    masked pair is still excluded after the score mod), which is qkv's rule for attended non-finite values --
    and the NaN in the output lets :func:`qkv.attention` apply the one rule (:mod:`qkv.core.nonfinite`) where a
    tile mixes in what the mask excludes. No extra pass over the inputs, no device sync. A ``-inf`` that the
    mod returns for a finite score (a bias used as a mask) stays a masked pair.
    """

    def score_mod(score, b, h, q_idx, kv_idx):
        bad = ~torch.isfinite(score)
        if mod is not None:
            score = _mods.apply(mod, score, b, h, q_idx, kv_idx, lq, lk)
        return torch.where(bad | torch.isnan(score), float("inf"), score)

    return score_mod


def on_device(node, device, memo: dict | None = None):
    """A copy of a mask or score mod (and of its children) whose tensors are on ``device``; ``node`` itself when
    they already are. Flex compiles ``mask_mod``/``score_mod`` into its kernel: a tensor they capture must live on
    the kernel's device (a CPU ``padding`` length or ALiBi slope next to CUDA queries would be a copy inside the
    kernel). Reads nothing but the object's attributes (the tensors, masks and mods it holds)."""
    memo = {} if memo is None else memo
    if id(node) in memo:
        return memo[id(node)]
    if isinstance(node, Tensor):
        out = node if node.device == torch.device(device) else node.to(device)
    elif isinstance(node, (tuple, list)):
        out = type(node)(on_device(x, device, memo) for x in node)
    elif hasattr(node, "fingerprint") and hasattr(node, "__dict__") and not isinstance(node, type):
        moved = {k: on_device(v, device, memo) for k, v in vars(node).items()}
        if all(moved[k] is v for k, v in vars(node).items()):
            out = node
        else:
            out = copy.copy(node)
            vars(out).update(moved)
    else:
        out = node
    memo[id(node)] = out
    return out


def block_mask_for(mask, B: int, H: int, lq: int, lk: int, device) -> object:
    """The ``BlockMask`` of ``mask`` for a ``(B, H, lq, lk)`` problem from its block map (closed form where the
    mask has one: nothing of size ``lq x lk`` is evaluated), reused for the same mask fingerprint and sizes."""
    from torch.nn.attention.flex_attention import BlockMask

    fp = mask.fingerprint()
    key = None if fp is None else (fp, B, H, lq, lk, str(device))
    if key is not None and key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key][1]
    moved = on_device(mask, device)
    kinds = moved.block_map(lq, lk, BLOCK, BLOCK, device)  # (B|1, H|1, nq, nk) int8 EMPTY/PARTIAL/FULL
    num, idx = kv_blocks(kinds == PARTIAL)
    full_num, full_idx = kv_blocks(kinds == FULL)
    bm = BlockMask.from_kv_blocks(
        num, idx, full_num, full_idx, BLOCK_SIZE=BLOCK, mask_mod=_mask_mod(moved, lq, lk), seq_lengths=(lq, lk)
    )
    if key is not None:
        _CACHE[key] = (mask, bm)  # holds the mask, so the ids in its fingerprint stay unique
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return bm


def _lse_request():
    """``{"return_aux": AuxRequest(lse=True)}`` where torch has it, else the older ``{"return_lse": True}``."""
    try:
        from torch.nn.attention.flex_attention import AuxRequest
    except ImportError:  # pragma: no cover - torch < 2.9
        return {"return_lse": True}
    return {"return_aux": AuxRequest(lse=True)}


def flex_forward(inp: AttentionInputs) -> tuple[Tensor, Tensor | None]:
    """``(out, lse or None)`` of validated inputs (lse only when asked for); differentiable on GPUs."""
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (inp.q, inp.k, inp.v))
    if not inp.needs_grad:  # Flex on CPU refuses inputs that require grad even under no_grad
        q, k, v = q.detach(), k.detach(), v.detach()
    block_mask = None if inp.mask is None else block_mask_for(inp.mask, inp.B, inp.Hq, inp.Lq, inp.Lk, q.device)
    score_mod = _score_mod(on_device(inp.score_mod, q.device), inp.Lq, inp.Lk)
    kwargs = _lse_request() if inp.return_lse else {}
    args = dict(score_mod=score_mod, block_mask=block_mask, scale=inp.scale, enable_gqa=inp.groups > 1, **kwargs)
    # Dynamic shapes on CUDA; static on CPU, where torch 2.13's C++ Flex template miscompiles some dynamic
    # graphs (CppCompileError "cur_qSplitSize7 was not declared": padding & causal with ALiBi, B=2).
    dynamic = inp.device_type != "cpu" and not _STATIC_ONLY
    try:
        res = _flex(dynamic)(q, k, v, **args)
    except ValueError:
        raise
    except Exception as e:
        if not dynamic:
            raise _failed(inp, e) from e
        try:  # a compiler failure with symbolic lengths: the same call, and every later one, with static shapes
            res = _flex(False)(q, k, v, **args)
            _STATIC_ONLY.add(True)
        except ValueError:
            raise
        except Exception as e2:
            raise _failed(inp, e2) from e2
    if not inp.return_lse:
        return res, None
    out, aux = res
    lse = aux if isinstance(aux, Tensor) else aux.lse
    return out, lse.float()


def _failed(inp: AttentionInputs, e: Exception) -> RuntimeError:
    """torch.compile's errors name its internals: say which mask and mod failed, and what to do."""
    first = (str(e).strip().splitlines() or [""])[0][:300]
    return RuntimeError(
        f"FlexAttention failed on mask {inp.mask!r} with score_mod {inp.score_mod!r} "
        f"({type(e).__name__}: {first}); use impl='tiled' for these inputs"
    )
