"""``qkv.trace([text, ...])``: many texts through one model in right-padded batches, recording only some steps.

Shape legend: ``B`` texts per pass, ``N`` layers, ``H`` query heads, ``L`` tokens (``L_i`` of text ``i``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import torch

from .attribution import transformed_value_norms
from .loading import load_model, model_info

if TYPE_CHECKING:
    from .trace import Trace

__all__ = ["trace_batch"]


def trace_batch(
    texts: Sequence[str],
    model: Any = "minilm",
    *,
    steps: Sequence[str] | None = None,
    batch_size: int = 32,
    truncate: bool = False,
) -> list[Trace]:
    """Trace many texts in right-padded batches, recording only ``steps``; one :class:`Trace` per text, in order.

    Texts are sorted by length so each batch pads little; padding keys are masked (``attention_mask``), so
    each trace equals ``trace(text)`` on its own tokens (to float rounding).

    Args:
        texts: non-empty strings.
        model: as for :func:`trace`.
        steps: attention steps to keep, a subset of ``q, k, v, scores, scaled, weights, output`` (default all);
            ``weights`` is always kept. ``fv_norms`` (the ``values`` measure) need ``v``.
        batch_size: texts per forward pass.
        truncate: as for :func:`trace`.

    A transformers model (:mod:`qkv.hf`) is traced one text at a time, every step recorded.

    Returns:
        ``len(texts)`` traces; tensors per trace ``(N, H, L_i, L_i)`` etc., steps not recorded are ``None``.
    """
    from ..nn.record import STEP_NAMES, Recorder, recording
    from .trace import Trace  # at call time: trace.py re-exports trace_batch

    if isinstance(texts, str) or not isinstance(texts, (list, tuple)) or not texts:
        raise ValueError("trace_batch expects a non-empty list of texts; for one text call trace(text)")
    for i, t in enumerate(texts):
        if not isinstance(t, str) or not t.strip():
            raise ValueError(f"text {i} of {len(texts)} is empty ({t!r}); every text needs at least one word")
    keep = set(STEP_NAMES if steps is None else steps) | {"weights"}
    unknown = keep - set(STEP_NAMES)
    if unknown:
        raise ValueError(f"unknown steps {sorted(unknown)}; choose from {', '.join(STEP_NAMES)}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    m = load_model(model)
    if type(m).__name__ == "HFModel":  # a transformers model: one text at a time through the qkv backend
        from .hf_trace import trace_transformers

        out = []
        for i, t in enumerate(texts):
            try:
                out.append(trace_transformers(t, m, truncate=truncate))
            except ValueError as e:
                raise ValueError(f"text {i}: {e}") from None
        return out
    if m.tokenizer is None:
        raise ValueError(
            "the model has no tokenizer (no tokenizer.json next to its config.json); add one to trace text"
        )
    cfg, info = m.config, model_info(m, model)
    encs = []
    for i, t in enumerate(texts):
        try:
            encs.append(m.tokenizer.encode(t, truncate=truncate))
        except ValueError as e:
            raise ValueError(f"text {i}: {e}") from None
    order = sorted(range(len(texts)), key=lambda i: len(encs[i]))
    out: list[Trace | None] = [None] * len(texts)
    pad = m.tokenizer.pad_token_id
    for lo in range(0, len(order), batch_size):
        idx = order[lo : lo + batch_size]
        lens = [len(encs[i]) for i in idx]
        ids = torch.full((len(idx), max(lens)), pad, dtype=torch.long)  # (B, L)
        mask = torch.zeros_like(ids)
        for r, i in enumerate(idx):
            ids[r, : lens[r]] = torch.tensor(encs[i].ids, dtype=torch.long)
            mask[r, : lens[r]] = 1
        rec = Recorder([f"layers.*.attention.{s}" for s in sorted(keep)])
        with torch.no_grad(), recording(rec):
            m(ids, attention_mask=None if all(n == lens[0] for n in lens) else mask)
        got = {
            s: torch.stack([rec[f"layers.{n}.attention.{s}"].float() for n in range(cfg.num_layers)], 1) for s in keep
        }  # step -> (B, N, H, L, L) or (B, N, H, L, D)
        fv = None
        if "v" in keep:
            with torch.no_grad():
                fv = torch.stack(
                    [
                        transformed_value_norms(
                            got["v"][:, n], m.layers[n].attention.out_proj.weight.float(), num_heads=cfg.num_heads
                        )
                        for n in range(cfg.num_layers)
                    ],
                    1,
                )  # (B, N, H, L)
        for r, i in enumerate(idx):
            n_tok, e = lens[r], encs[i]
            sq = {
                s: got[s][r, ..., :n_tok, :n_tok]
                if s in ("scores", "scaled", "weights")
                else got[s][r, ..., :n_tok, :].contiguous()
                for s in keep
            }
            sq = {s: t.contiguous() for s, t in sq.items()}
            out[i] = Trace(
                text=texts[i],
                tokens=list(e.tokens),
                offsets=[tuple(o) for o in e.offsets],
                special=[bool(x) for x in e.special],
                model=dict(info),
                weights=sq["weights"],
                scores=sq.get("scores"),
                scaled=sq.get("scaled"),
                fv_norms=None if fv is None else fv[r, :, :, :n_tok].contiguous(),
                q=sq.get("q"),
                k=sq.get("k"),
                v=sq.get("v"),
                output=sq.get("output"),
            )
    return out  # type: ignore[return-value]
