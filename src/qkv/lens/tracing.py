"""``qkv.trace(text, model)``: run a model once and build the :class:`qkv.lens.trace.Trace` of one text.

A native qkv model runs under a :class:`qkv.nn.record.Recorder` that keeps
``layers.{n}.attention.{q,k,v,scores,scaled,weights,output}``; a transformers model goes to
:func:`qkv.lens.hf_trace.trace_transformers` and a list of texts to :func:`qkv.lens.batch.trace_batch`.
Re-exported as ``qkv.lens.trace.trace`` (and ``qkv.trace``).

Shapes of the trace: q ``(N, H, L, D)``, k/v ``(N, Hkv, L, D)``, scores/scaled/weights ``(N, H, L, L)``,
output ``(N, H, L, D)``, fv_norms ``(N, H, L)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import torch
from torch import Tensor

from .attribution import transformed_value_norms
from .loading import load_model, model_info

if TYPE_CHECKING:
    from .trace import Trace

__all__ = ["trace"]


def trace(
    text: str | Sequence[str], model: Any = "minilm", *, tokenizer: Any = None, truncate: bool = False, **batch
) -> Trace | list[Trace]:
    """Run ``model`` on ``text`` once and record every attention step of every layer and head.

    Args:
        text: the input text (non-empty, within the model's maximum length); a list of texts runs
            :func:`trace_batch` (``batch`` takes its ``steps`` and ``batch_size``) and returns a list.
        model: a model name/path for :func:`qkv.models.load` (loaded once per process), a loaded qkv model,
            a transformers ``PreTrainedModel``, or a directory / cached hub id of any family whose attention
            goes through ``transformers.AttentionInterface`` (recorded through :mod:`qkv.hf`).
        tokenizer: the transformers tokenizer of a transformers model (default: the one loaded with it).
        truncate: keep only the first tokens the model accepts instead of raising on a too-long text.

    Returns:
        A :class:`Trace` (a list of them for a list of texts).

    Raises:
        ValueError: empty text, text longer than the model accepts, or an unknown model.
    """
    from ..nn.record import Recorder, recording
    from .trace import Trace

    if isinstance(text, (list, tuple)):
        from .batch import trace_batch

        return trace_batch(text, model, truncate=truncate, **batch)
    if batch:
        raise ValueError(f"{', '.join(batch)} only apply to a list of texts; got one text")
    if not isinstance(text, str) or not text.strip():
        raise ValueError(
            f"text is empty; give a sentence such as 'The cat sat on the mat because it was tired.' (got {text!r})"
        )
    m = load_model(model)
    if tokenizer is not None or type(m).__name__ == "HFModel":
        from .hf_trace import trace_transformers

        if tokenizer is not None and type(m).__name__ != "HFModel":
            raise ValueError(f"tokenizer= goes with a transformers model; {type(m).__name__} brings its own tokenizer")
        return trace_transformers(text, m, tokenizer, truncate=truncate)
    if m.tokenizer is None:
        raise ValueError(
            f"model {m.config.name or ''!s} has no tokenizer (no tokenizer.json next to its config.json); "
            f"add one to trace text"
        )
    enc = m.tokenizer.encode(text, truncate=truncate)
    cfg = m.config
    ids = torch.tensor([enc.ids], dtype=torch.long)  # (B=1, L)
    rec = Recorder(["layers.*.attention.*"])
    with torch.no_grad(), recording(rec):
        m(ids)

    def stack(step: str) -> Tensor:
        return torch.stack([rec[f"layers.{n}.attention.{step}"][0].float() for n in range(cfg.num_layers)])

    v = stack("v")  # (N, Hkv, L, D)
    with torch.no_grad():
        fv = torch.stack(
            [
                transformed_value_norms(
                    v[n : n + 1], m.layers[n].attention.out_proj.weight.float(), num_heads=cfg.num_heads
                )[0]
                for n in range(cfg.num_layers)
            ]
        )  # (N, H, L)
    info = model_info(m, model)
    return Trace(
        text=text,
        tokens=list(enc.tokens),
        offsets=[tuple(o) for o in enc.offsets],
        special=[bool(s) for s in enc.special],
        model=info,
        weights=stack("weights"),
        scores=stack("scores"),
        scaled=stack("scaled"),
        fv_norms=fv,
        q=stack("q"),
        k=stack("k"),
        v=v,
        output=stack("output"),
    )
