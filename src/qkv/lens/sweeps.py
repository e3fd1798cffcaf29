"""Sweeps: the effect of every (layer, head) -- and on request every position -- for one text, batched; activation
patching between two texts; attribution patching (gradient x activation difference) and its rank agreement.

**Ablation sweep** (:func:`ablation_sweep`): copies of the text run in one batch, row ``b`` ablating head ``h_b``
(a hook edits only its row), so the 72 heads of MiniLM are one forward pass of 72 rows.

**Activation patching** (:func:`patch_sweep`): per head and step, that head's tensor from one text's run put into
the other's, both ways. Both directions are reported on one scale, the position between the corrupted and the clean
metric: ``fraction = (m - m_corrupted) / (m_clean - m_corrupted)``. Clean -> corrupted (denoising): the fraction
one head restores (0 = nothing). Corrupted -> clean (noising): the fraction left after one head is corrupted
(1 = the head does not matter).

**Attribution patching** (:func:`attribution_sweep`): the first-order estimate ``grad m . (a_clean - a_corrupted)``
from one forward and one backward pass per direction -- an approximation; :func:`rank_agreement` reports its
Spearman correlation with exact patching, it is never presented as exact.

Shapes: ``N`` layers, ``H`` heads (``Hkv`` for ``k``/``v``), ``L`` tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from ..nn.hooks import Hooks, hooks
from .build import build_traces
from .effects import Metric, as_metric, forward_rows, torch_threads
from .interventions import HOWS, Ablate, Edit, Patch, Target
from .loading import adapt
from .stats import spearman

__all__ = [
    "HeadEffects",
    "PatchResult",
    "ablation_sweep",
    "patch_sweep",
    "attribution_sweep",
    "rank_agreement",
    "metric_gradient",
    "PATCH_STEPS",
]

#: Steps activation patching addresses per head.
PATCH_STEPS = ("output", "q", "k", "v", "weights")


@dataclass
class HeadEffects:
    """Per head (and per position when swept) the metric's change under one intervention method.

    ``effects`` is ``(N, H)`` (or ``(N, H, L)`` with positions): ``metric(intervened) - base``.
    """

    text: str
    model: str
    metric: str
    how: str
    base: float
    effects: np.ndarray
    tokens: list[str] = field(default_factory=list)
    layers: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.layers = self.layers or list(range(self.effects.shape[0]))

    def top(self, k: int = 5) -> list[tuple[int, int, float]]:
        """``(layer, head, effect)`` of the ``k`` heads with the largest ``|effect|`` (head grid; positions summed
        by their largest ``|effect|``)."""
        g = self.grid()
        order = np.argsort(-np.abs(g).ravel(), kind="stable")[:k]
        return [(self.layers[int(i // g.shape[1])], int(i % g.shape[1]), float(g.ravel()[i])) for i in order]

    def grid(self) -> np.ndarray:
        """``(N, H)``: the head grid (with positions: the effect of largest magnitude over positions)."""
        if self.effects.ndim == 2:
            return self.effects
        idx = np.abs(self.effects).argmax(-1)
        return np.take_along_axis(self.effects, idx[..., None], -1)[..., 0]

    def summary(self) -> str:
        """One honest line: the largest effects against the base value."""
        (l0, h0, e0), *_ = self.top(1)
        g = self.grid()
        share = float(np.mean(np.abs(g) > 0.1 * max(abs(self.base), 1e-9)))
        return (
            f"{self.metric} is {self.base:+.4f} on the plain run; {self.how}-ablating one head at a time moves it by "
            f"{e0:+.4f} at most (L{l0}H{h0}); {share:.0%} of the {g.size} heads move it by more than 10% of the base "
            f"value; mean |effect| {float(np.abs(g).mean()):.4f}"
        )

    def to_dict(self) -> dict:
        """``{"metric": {"name", "base"}, "how", "text", "model", "heads": [{"layer", "head", "effect"}], "top",
        "summary"}`` plus ``"tokens"`` and per head ``"positions"`` when positions were swept."""
        g = self.grid()
        heads = []
        for r, n in enumerate(self.layers):
            for h in range(g.shape[1]):
                d = {"layer": n, "head": h, "effect": float(g[r, h])}
                if self.effects.ndim == 3:
                    d["positions"] = [float(x) for x in self.effects[r, h]]
                heads.append(d)
        out = {
            "metric": {"name": self.metric, "base": self.base},
            "how": self.how,
            "text": self.text,
            "model": self.model,
            "heads": heads,
            "top": [{"layer": n, "head": h, "effect": e} for n, h, e in self.top(5)],
            "summary": self.summary(),
        }
        if self.effects.ndim == 3:
            out["tokens"] = list(self.tokens)
        return out


def _bind(metric: Metric, adapter, target: Target):
    """``(bound metric, base value)`` on ``target``'s un-intervened run."""
    base = forward_rows(adapter, target, [[]])
    fn = metric.bind(target, base)
    return fn, float(fn(base)[0])


def _run_jobs(adapter, target: Target, fn, jobs: list[list[Edit]], batch_size: int) -> np.ndarray:
    """The bound metric under each job's edits, ``batch_size`` rows per pass."""
    out = []
    for lo in range(0, len(jobs), batch_size):
        out.append(fn(forward_rows(adapter, target, jobs[lo : lo + batch_size])).detach().double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def _check_batch(batch_size: int) -> None:
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int (rows per pass), got {batch_size!r}; e.g. 72")


def ablation_sweep(
    text: str,
    metric: Any,
    model: Any = "minilm",
    *,
    how: str = "zero",
    over: Sequence[str] | None = None,
    source: Any = None,
    positions: bool = False,
    layers: Sequence[int] | None = None,
    batch_size: int = 72,
    threads: int | None = 1,
) -> HeadEffects:
    """Ablate every (layer, head) -- with ``positions``, every (layer, head, token) -- one at a time, batched.

    Args:
        text: the text.
        metric: a :class:`qkv.lens.effects.Metric` or ``fn(trace) -> float`` (then one traced pass per head).
        model: any model qkv traces.
        how, over, source: as for :func:`qkv.lens.ablate`.
        positions: also sweep the token position (``(N, H, L)`` effects).
        layers: only these layers (default all); ``effects`` then has one row per listed layer.
        batch_size: rows (copies of the text) per forward pass.
        threads: torch intra-op threads while sweeping (restored; see :func:`qkv.lens.effects.torch_threads`).
    """
    with torch_threads(threads):
        return _ablation_sweep(text, metric, model, how, over, source, positions, layers, batch_size)


def _ablation_sweep(text, metric, model, how, over, source, positions, layers, batch_size) -> HeadEffects:
    _check_batch(batch_size)
    if how not in HOWS:
        raise ValueError(f"how must be one of {', '.join(HOWS)}, got {how!r}; use zero, mean or resample")
    m, adapter = as_metric(metric), adapt(model)
    target = Target.of(adapter, text)
    if isinstance(source, str):
        source = build_traces(adapter, [source], steps=["output"])[0]
    info = target.info
    H, L = info["num_heads"], len(target.tokens)
    rows = [target.layers(n)[0] for n in layers] if layers is not None else target.layers(None)
    spots = [(n, h, p) for n in rows for h in range(H) for p in (range(L) if positions else [None])]
    ivs = [
        Ablate(n, h, how, "output", None if over is None else tuple(over), source, None if p is None else (p,))
        for n, h, p in spots
    ]
    shape = (len(rows), H, L) if positions else (len(rows), H)
    if m.needs_trace:
        from .tracing import trace

        base = float(m.fn(trace(text, adapter)))
        vals = np.array([float(m.fn(trace(text, adapter, interventions=[iv]))) for iv in ivs])
    else:
        fn, base = _bind(m, adapter, target)
        vals = _run_jobs(adapter, target, fn, [iv.edits(target) for iv in ivs], batch_size)
    effects = (vals - base).reshape(shape)
    return HeadEffects(text, info["name"], m.name, how, base, effects, list(target.tokens), rows)


@dataclass
class PatchResult:
    """Activation patching between ``clean`` and ``corrupted``: per step a ``(N, H)`` grid per direction of
    ``(m - m_corrupted) / (m_clean - m_corrupted)`` (see the module docstring)."""

    clean: str
    corrupted: str
    model: str
    metric: str
    clean_value: float
    corrupted_value: float
    denoise: dict[str, np.ndarray]  # clean -> corrupted: fraction restored
    noise: dict[str, np.ndarray]  # corrupted -> clean: fraction left

    def to_dict(self) -> dict:
        """``{"metric": {"name", "base", "clean", "corrupted"}, "how": "patch", "texts", "model",
        "heads": [{"layer", "head", "step", "effect", "restored", "left"}], ...}`` where ``effect`` is the fraction
        restored clean -> corrupted and ``left`` the fraction left corrupted -> clean."""
        heads = []
        for step, g in self.denoise.items():
            for n in range(g.shape[0]):
                for h in range(g.shape[1]):
                    f = float(g[n, h])
                    heads.append(
                        {
                            "layer": n,
                            "head": h,
                            "step": step,
                            "effect": f,
                            "restored": f,
                            "left": float(self.noise[step][n, h]),
                        }
                    )
        return {
            "metric": {
                "name": self.metric,
                "base": self.corrupted_value,
                "clean": self.clean_value,
                "corrupted": self.corrupted_value,
            },
            "how": "patch",
            "texts": {"clean": self.clean, "corrupted": self.corrupted},
            "model": self.model,
            "heads": heads,
        }


def _pair(adapter, clean: str, corrupted: str) -> tuple[Target, Target]:
    a, b = Target.of(adapter, clean), Target.of(adapter, corrupted)
    if len(a.tokens) != len(b.tokens):
        raise ValueError(
            f"patching needs texts of the same token count (position i patches position i); expected "
            f"{len(a.tokens)} tokens as the clean text, the corrupted text has {len(b.tokens)}: change one word "
            "for one of the same length in tokens"
        )
    return a, b


def _metric_pair(m: Metric, adapter, a: Target, b: Target):
    if m.needs_trace:
        raise ValueError(
            "patching needs a batched metric (lens.preference / logit_diff / embedding_cosine), "
            "got a callable; wrap its logic in a Metric"
        )
    fa, ma = _bind(m, adapter, a)
    fb, mb = _bind(m, adapter, b)
    if abs(ma - mb) < 1e-6:
        raise ValueError(
            f"the metric is {ma:.6f} on the clean text and {mb:.6f} on the corrupted one; expected them to differ "
            "(the fraction restored is relative to that difference): pick texts or tokens the model tells apart"
        )
    return fa, ma, fb, mb


def patch_sweep(
    clean: str,
    corrupted: str,
    metric: Any,
    model: Any = "minilm",
    *,
    steps: Sequence[str] = ("output",),
    batch_size: int = 72,
    threads: int | None = 1,
) -> PatchResult:
    """Exact activation patching per head and step, both directions (see the module docstring); ``threads`` as
    for :func:`ablation_sweep`."""
    with torch_threads(threads):
        return _patch_sweep(clean, corrupted, metric, model, steps, batch_size)


def _patch_sweep(clean, corrupted, metric, model, steps, batch_size) -> PatchResult:
    _check_batch(batch_size)
    bad = [s for s in steps if s not in PATCH_STEPS]
    if bad or not steps:
        raise ValueError(f"steps must be some of {', '.join(PATCH_STEPS)}, got {list(steps)}; e.g. steps=['output']")
    m, adapter = as_metric(metric), adapt(model)
    a, b = _pair(adapter, clean, corrupted)
    fa, ma, fb, mb = _metric_pair(m, adapter, a, b)
    ta, tb = (build_traces(adapter, [t.text], steps=list(steps))[0] for t in (a, b))
    denoise, noise = {}, {}
    for step in steps:
        H = a.info["num_kv_heads" if step in ("k", "v") else "num_heads"]
        spots = [(n, h) for n in range(a.info["num_layers"]) for h in range(H)]
        into_b = _run_jobs(adapter, b, fb, [Patch(ta, n, h, step).edits(b) for n, h in spots], batch_size)
        into_a = _run_jobs(adapter, a, fa, [Patch(tb, n, h, step).edits(a) for n, h in spots], batch_size)
        denoise[step] = ((into_b - mb) / (ma - mb)).reshape(-1, H)
        noise[step] = ((into_a - mb) / (ma - mb)).reshape(-1, H)
    return PatchResult(clean, corrupted, a.info["name"], m.name, ma, mb, denoise, noise)


def metric_gradient(adapter, target: Target, fn, step: str, N: int):
    """``(grads (N, H, L, D), activations (N, H, L, D))`` of the bound metric w.r.t. every layer's ``step``."""
    deltas: dict[str, torch.Tensor] = {}
    acts: dict[str, torch.Tensor] = {}

    def add_delta(t, name):
        d = deltas.setdefault(name, torch.zeros_like(t, requires_grad=True))
        acts[name] = t.detach()
        return t + d

    names = [f"{adapter.attention_name(n)}.{step}" for n in range(N)]
    ids = torch.tensor([target.ids], dtype=torch.long, device=adapter.device)
    h = Hooks()
    for name in names:
        h.add(name, add_delta)
    with torch.enable_grad(), hooks(h):
        value = fn(adapter.forward(ids, None)).sum()
    grads = torch.autograd.grad(value, [deltas[n] for n in names])
    return torch.stack([g[0] for g in grads]).double(), torch.stack([acts[n][0] for n in names]).double()


def attribution_sweep(
    clean: str, corrupted: str, metric: Any, model: Any = "minilm", *, step: str = "output", threads: int | None = 1
) -> PatchResult:
    """Attribution patching: ``grad m . (a_other - a_here)`` per head, one forward and one backward per direction,
    on the same fraction scale as :func:`patch_sweep` (an estimate; see :func:`rank_agreement`)."""
    with torch_threads(threads):
        return _attribution_sweep(clean, corrupted, metric, model, step)


def _attribution_sweep(clean, corrupted, metric, model, step) -> PatchResult:
    if step not in ("output", "q", "k", "v"):
        raise ValueError(f"attribution patching takes step output, q, k or v, got {step!r}; e.g. step='output'")
    m, adapter = as_metric(metric), adapt(model)
    a, b = _pair(adapter, clean, corrupted)
    fa, ma, fb, mb = _metric_pair(m, adapter, a, b)
    N = a.info["num_layers"]
    ga, xa = metric_gradient(adapter, a, fa, step, N)
    gb, xb = metric_gradient(adapter, b, fb, step, N)
    into_b = (gb * (xa - xb)).sum((-1, -2)).numpy()  # (N, H): m(b with a's head) - m_b, to first order
    into_a = (ga * (xb - xa)).sum((-1, -2)).numpy()
    d = ma - mb
    return PatchResult(clean, corrupted, a.info["name"], m.name, ma, mb, {step: into_b / d}, {step: 1.0 + into_a / d})


def rank_agreement(estimate: PatchResult, exact: PatchResult, step: str = "output") -> dict[str, float]:
    """Spearman correlation across heads of attribution-patching estimates vs exact patching, per direction."""
    for r in (estimate, exact):
        if step not in r.denoise:
            raise ValueError(f"step {step!r} is not in a result (it has {list(r.denoise)}); patch that step in both")
    return {
        "denoise": spearman(estimate.denoise[step].ravel(), exact.denoise[step].ravel()),
        "noise": spearman(estimate.noise[step].ravel(), exact.noise[step].ravel()),
    }
