"""``qkv.trace(text, model)`` and ``qkv.trace([texts])``: check the request, read the model through its adapter
(:func:`qkv.lens.loading.adapt`) and build the traces (:func:`qkv.lens.build.build_traces`).

The data path of ``qkv.trace(text)``: ``qkv.__getattr__`` -> :func:`trace` (checks) -> :func:`adapt`
(``load_model``: qkv model or :class:`qkv.hf.HFModel`, cached per name) -> :func:`build_traces` (encode, pad,
device, one forward pass under a :class:`qkv.nn.record.Recorder`; the model's attention calls pass
:func:`qkv.nn.hooked.attend`) -> :class:`qkv.lens.trace.Trace` (float32, CPU).

Shapes of a trace: q ``(N, H, L, D)``, k/v ``(N, Hkv, L, D)``, scores/scaled/weights ``(N, H, L, L)``,
output ``(N, H, L, D)``, fv_norms ``(N, H, L)``, final ``(L, E)``.
"""

from __future__ import annotations

from typing import Any, Sequence

from ..nn.hooks import HookSet
from ..nn.record import STEP_NAMES
from .build import build_traces
from .interventions import Intervention, Target, compile_hooks
from .loading import adapt
from .trace import Trace

__all__ = ["trace", "trace_batch"]

_EXAMPLE = "The cat sat on the mat because it was tired."


def trace(
    text: str | Sequence[str],
    model: Any = "minilm",
    *,
    tokenizer: Any = None,
    truncate: bool = False,
    hook_sets: Sequence[HookSet] = (),
    interventions: Sequence[Intervention] = (),
    **batch,
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
        hook_sets: hook sets (:mod:`qkv.nn.hooks`) active during the forward pass, e.g. interventions; the
            trace records what flowed after them.
        interventions: :func:`qkv.lens.ablate`, ``knockout``, ``swap``, ``patch`` (:mod:`qkv.lens.interventions`),
            applied in order before ``hook_sets``; tokens are resolved in each text.

    Returns:
        A :class:`Trace` (a list of them for a list of texts).

    Raises:
        ValueError: empty text, text longer than the model accepts, or an unknown model.
    """
    if isinstance(text, (list, tuple)):
        return trace_batch(text, model, truncate=truncate, hook_sets=hook_sets, interventions=interventions, **batch)
    if batch:
        raise ValueError(f"{', '.join(batch)} only apply to a list of texts; got one text")
    _check_text(text)
    adapter = adapt(model, tokenizer=tokenizer)
    if interventions:
        hook_sets = [compile_hooks(Target.of(adapter, text, truncate=truncate), interventions), *hook_sets]
    return build_traces(adapter, [text], truncate=truncate, hook_sets=hook_sets)[0]


def trace_batch(
    texts: Sequence[str],
    model: Any = "minilm",
    *,
    steps: Sequence[str] | None = None,
    batch_size: int = 32,
    truncate: bool = False,
    hook_sets: Sequence[HookSet] = (),
    interventions: Sequence[Intervention] = (),
) -> list[Trace]:
    """Trace many texts in right-padded batches, recording only ``steps``; one :class:`Trace` per text, in order.

    Texts are sorted by length so each batch pads little; padding keys are masked (``attention_mask``), so
    each trace equals ``trace(text)`` on its own tokens (to float rounding). A transformers model runs one
    text per pass.

    Args:
        texts: non-empty strings.
        model: as for :func:`trace`.
        steps: attention steps to keep, a subset of ``q, k, v, scores, scaled, weights, output`` (default all);
            ``weights`` is always kept. ``fv_norms`` (the ``values`` measure) need ``v``.
        batch_size: texts per forward pass.
        truncate: as for :func:`trace`.
        hook_sets: as for :func:`trace`.
        interventions: as for :func:`trace` (each text then runs in its own pass, its tokens resolved in it).

    Returns:
        ``len(texts)`` traces; tensors per trace ``(N, H, L_i, L_i)`` etc., steps not recorded are ``None``.
    """
    if isinstance(texts, str) or not isinstance(texts, (list, tuple)) or not texts:
        raise ValueError("trace_batch expects a non-empty list of texts; for one text call trace(text)")
    for i, t in enumerate(texts):
        if not isinstance(t, str) or not t.strip():
            raise ValueError(f"text {i} of {len(texts)} is empty ({t!r}); every text needs at least one word")
    unknown = set(STEP_NAMES if steps is None else steps) - set(STEP_NAMES)
    if unknown:
        raise ValueError(f"unknown steps {sorted(unknown)}; choose from {', '.join(STEP_NAMES)}")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    adapter = adapt(model)
    if interventions:
        return [
            build_traces(
                adapter,
                [t],
                steps=steps,
                truncate=truncate,
                hook_sets=[compile_hooks(Target.of(adapter, t, truncate=truncate), interventions), *hook_sets],
            )[0]
            for t in texts
        ]
    return build_traces(
        adapter, list(texts), steps=steps, batch_size=batch_size, truncate=truncate, hook_sets=hook_sets
    )


def _check_text(text: Any) -> None:
    if isinstance(text, (bytes, bytearray)):
        raise ValueError(
            f"text must be a str, got {type(text).__name__} ({bytes(text[:40])!r}); decode it first, "
            "e.g. text.decode('utf-8')"
        )
    if not isinstance(text, str):
        raise ValueError(f"text must be a str such as {_EXAMPLE!r}, got {type(text).__name__}")
    if not text.strip():
        raise ValueError(f"text is empty; give a sentence such as {_EXAMPLE!r} (got {text!r})")
