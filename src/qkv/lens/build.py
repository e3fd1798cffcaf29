"""The one trace builder: texts through a :class:`qkv.lens.adapters.ModelAdapter` into :class:`Trace` records.

Every trace -- ``qkv.trace(text)``, ``qkv.trace([texts])``, the served trace, native and transformers models --
is built here: texts are encoded by the adapter, sorted by length into right-padded batches where the model
pads (one text per pass otherwise), moved to the model's device and run once under a recorder of the
wanted steps (entered *inside* any hook sets given, so it records what actually flowed); every tensor of a
``Trace`` comes back float32 on the CPU, with one ``model`` dict (:meth:`ModelAdapter.info`).

Shape legend: ``B`` texts per pass, ``N`` layers, ``H``/``Hkv`` query/key-value heads, ``L`` tokens (``L_i``
of text ``i``), ``D`` head dim, ``E`` hidden size, ``V`` vocabulary.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from ..nn.hooks import HookSet, hooks
from ..nn.record import STEP_NAMES, Recorder, recording
from .adapters import Encoded, Forward, ModelAdapter
from .attribution import transformed_value_norms
from .trace import Trace

__all__ = ["build_traces", "encode_all"]

_SQUARE = ("scores", "scaled", "weights")


def encode_all(adapter: ModelAdapter, texts: Sequence[str], *, truncate: bool = False) -> list[Encoded]:
    """Each text's tokens; with several texts an error names the text (``text 3: ...``)."""
    if len(texts) == 1:
        return [adapter.encode(texts[0], truncate=truncate)]
    out = []
    for i, t in enumerate(texts):
        try:
            out.append(adapter.encode(t, truncate=truncate))
        except ValueError as e:
            raise ValueError(f"text {i}: {e}") from None
    return out


def build_traces(
    adapter: ModelAdapter,
    texts: Sequence[str],
    *,
    steps: Sequence[str] | None = None,
    batch_size: int = 32,
    truncate: bool = False,
    hook_sets: Sequence[HookSet] = (),
) -> list[Trace]:
    """One :class:`Trace` per text, in order.

    Args:
        adapter: the model.
        texts: non-empty strings (checked by the caller).
        steps: attention steps to keep (default all); ``weights`` is always kept; the others are ``None``.
        batch_size: texts per forward pass (1 where the model does not pad).
        truncate: keep the first tokens the model accepts instead of raising on a too-long text.
        hook_sets: active hook sets (interventions) for every pass, outermost first.

    Returns:
        Traces with q ``(N, H, L_i, D)``, k/v ``(N, Hkv, L_i, D)``, scores/scaled/weights ``(N, H, L_i, L_i)``,
        output ``(N, H, L_i, D)``, fv_norms ``(N, H, L_i)``, final ``(L_i, E)``, logits ``(L_i, V)`` or None.
    """
    keep = sorted(set(STEP_NAMES if steps is None else steps) | {"weights"}, key=STEP_NAMES.index)
    encs = encode_all(adapter, texts, truncate=truncate)
    size = batch_size if adapter.pads else 1
    order = sorted(range(len(texts)), key=lambda i: len(encs[i]))
    out: list[Trace | None] = [None] * len(texts)
    info = adapter.info()
    for lo in range(0, len(order), size):
        idx = order[lo : lo + size]
        for i, trace in zip(idx, _run(adapter, [texts[i] for i in idx], [encs[i] for i in idx], keep, hook_sets)):
            out[i] = Trace(**trace, model=dict(info))
    return out  # type: ignore[return-value]


def _run(
    adapter: ModelAdapter, texts: list[str], encs: list[Encoded], keep: list[str], hook_sets: Sequence[HookSet]
) -> list[dict]:
    """One forward pass over a right-padded batch; the keyword arguments of each text's ``Trace``."""
    lens = [len(e) for e in encs]
    device = adapter.device
    ids = torch.full((len(encs), max(lens)), adapter.pad_token_id, dtype=torch.long)  # (B, L)
    mask = torch.zeros_like(ids)
    for r, e in enumerate(encs):
        ids[r, : lens[r]] = torch.tensor(e.ids, dtype=torch.long)
        mask[r, : lens[r]] = 1
    padded = any(n != lens[0] for n in lens)
    rec = Recorder([f"layers.*.attention.{s}" for s in keep])
    with torch.no_grad(), hooks(*hook_sets), recording(rec):
        fwd = adapter.forward(ids.to(device), mask.to(device) if padded else None)
    N = len({n.split(".")[1] for n in rec.names()})  # layers that ran through the hook points
    got = {s: torch.stack([_cpu(rec[f"{adapter.attention_name(n)}.{s}"]) for n in range(N)], 1) for s in keep}
    fv = _value_norms(adapter, got["v"]) if "v" in keep else None  # (B, N, H, L)
    return [_one(texts[r], encs[r], r, lens[r], got, fv, fwd) for r in range(len(encs))]


def _one(text: str, enc: Encoded, r: int, n: int, got: dict, fv: Tensor | None, fwd: Forward) -> dict:
    """Row ``r`` of a batch, cut to its ``n`` tokens."""
    sq = {s: (t[r, ..., :n, :n] if s in _SQUARE else t[r, ..., :n, :]).contiguous() for s, t in got.items()}
    return dict(
        text=text,
        tokens=list(enc.tokens),
        offsets=[tuple(o) for o in enc.offsets],
        special=[bool(x) for x in enc.special],
        weights=sq["weights"],
        scores=sq.get("scores"),
        scaled=sq.get("scaled"),
        fv_norms=None if fv is None else fv[r, :, :, :n].contiguous(),
        q=sq.get("q"),
        k=sq.get("k"),
        v=sq.get("v"),
        output=sq.get("output"),
        final=_cpu(fwd.final[r, :n]),
        logits=None if fwd.logits is None else _cpu(fwd.logits[r, :n]),
        embedding=None if fwd.embedding is None else _cpu(fwd.embedding[r]),
    )


def _cpu(t: Tensor) -> Tensor:
    return t.detach().float().cpu()


def _value_norms(adapter: ModelAdapter, v: Tensor) -> Tensor:
    """``||f_h(v_j)||`` ``(B, N, H, L)`` from v ``(B, N, Hkv, L, Dv)`` and each layer's ``W_O`` (ones where the
    adapter finds no output projection of the right width)."""
    B, N, _, L, Dv = v.shape
    H = adapter.info()["num_heads"]
    norms = []
    for n in range(N):
        w = adapter.out_weight(n)
        if w is None or w.shape[1] != H * Dv:
            norms.append(torch.ones(B, H, L))
        else:
            norms.append(transformed_value_norms(v[:, n], _cpu(w), num_heads=H))
    return torch.stack(norms, 1)
