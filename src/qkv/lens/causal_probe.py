"""The causal probe: over the probe's inputs (shipped twins, WSC XML, JSONL), does ablating a head change the
model's output preference for the referent -- and do the heads whose *weights* favour the referent *cause* it?

Per item (the probe's span mapping, :func:`qkv.lens.probing.map_item`): the metric is the pronoun's preference in
the last hidden states, ``cos(final[query], final[answer]) - cos(final[query], final[others])`` (token sets
averaged; several other candidates pooled), on the plain run and with each (layer, head) ablated -- all heads of
one item in one batched pass. Then:

* per head, the mean effect (ablated - plain) with a 95 % percentile-bootstrap interval that resamples twin pairs;
* held-out selection as in the probe: the head whose ablation lowers the preference most is chosen on one half of
  the pairs and its effect is scored on the other half, both ways, pooled (median of ``splits`` splits);
* the question the weight probe could not answer: Spearman's rank correlation across heads of the *weight
  preference* (mean ``weight(query -> answer) - weight(query -> others)``) and the *causal support* (minus the mean
  effect: how much the head's presence raises the preference), with a pair-bootstrap interval;
* whether the plain output prefers the referent at all (items with preference > 0, exact interval) and, over twin
  pairs, whether it moves toward the right candidate when one word flips the answer (sign test);
* optionally attribution: the first-order estimate ``-grad . (a - a_ablated)`` of every head's effect from one
  forward and one backward pass per item, with its rank agreement with the exact effects.

Shapes: ``M`` items, ``N`` layers, ``H`` heads, ``K = N * H``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from . import stats
from .effects import Preference, forward_rows, torch_threads
from .interventions import HOWS, Ablate, Target, reference_means
from .loading import adapt
from .probe_io import Dataset, Item, Skipped, load_twins, read_items
from .probing import Mapped, _twins, item_scores, map_item
from .sweeps import metric_gradient
from .tracing import trace_batch

__all__ = ["CausalProbe", "causal_probe", "CAUSAL_SCHEMA"]

CAUSAL_SCHEMA = "qkv.causal"


@dataclass
class CausalProbe:
    """Everything :func:`causal_probe` measured; :meth:`to_dict` is the JSON under ``causal``."""

    model: str
    how: str
    source: str
    shape: tuple[int, int]
    used: list[str]
    skipped: list[Skipped]
    base: np.ndarray  # (M,) plain-run preference for the right candidate
    effects: np.ndarray  # (M, K) ablated - plain
    weight_pref: np.ndarray  # (M, K) weight(query -> answer) - weight(query -> others)
    groups: list[str]
    twins: list[tuple[int, int]]
    rounds: int = 1000
    seed: int = 0
    splits: int = 21
    attribution: np.ndarray | None = None  # (M, K) first-order estimates of effects

    # ------------------------------------------------------------------ statistics
    def head_means(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per head ``(mean effect, ci_low, ci_high)``, each ``(K,)``."""
        return stats.mean_interval(self.effects, self.groups, self.rounds, self.seed)

    def heldout(self) -> dict:
        """The head chosen on one half (most negative mean effect), scored on the other, pooled; median split."""
        if len(set(self.groups)) < 2:
            return {}
        runs = []
        for s in range(self.seed, self.seed + self.splits):
            half = stats.split_groups(self.groups, s)
            scored = np.empty(len(self.groups))
            chosen = []
            for train, test in ((half, ~half), (~half, half)):
                k = int(np.argmin(self.effects[train].mean(0)))
                chosen.append(k)
                scored[test] = self.effects[test, k]
            runs.append((float(scored.mean()), s, scored, chosen))
        runs.sort(key=lambda r: (r[0], r[1]))
        value, s, scored, chosen = runs[(len(runs) - 1) // 2]
        mean, lo, hi = stats.mean_interval(scored, self.groups, self.rounds, self.seed)
        H = self.shape[1]
        return {
            "effect": float(mean[0]),
            "ci_low": float(lo[0]),
            "ci_high": float(hi[0]),
            "n": len(scored),
            "seed": s,
            "splits": {"n": len(runs), "min": runs[0][0], "max": runs[-1][0]},
            "heads_chosen": [{"layer": k // H, "head": k % H} for k in chosen],
        }

    def correlation(self) -> stats.Interval:
        """Spearman across heads of mean weight preference vs causal support (-mean effect), pair-bootstrap CI."""
        rho = stats.spearman(self.weight_pref.mean(0), -self.effects.mean(0))
        boots = [
            stats.spearman(self.weight_pref[idx].mean(0), -self.effects[idx].mean(0))
            for idx in stats.group_bootstrap(self.groups, self.rounds, self.seed)
        ]
        lo, hi = np.quantile(boots, [0.025, 0.975])
        return stats.Interval(rho, float(lo), float(hi), self.effects.shape[1])

    def output_preference(self) -> dict:
        """Does the plain output prefer the referent: items with preference > 0, and twins moving the right way."""
        right = int((self.base > 0).sum())
        acc = stats.accuracy(right, len(self.base))
        toward = sum(1 for a, b in self.twins if self.base[a] + self.base[b] > 0)
        away = sum(1 for a, b in self.twins if self.base[a] + self.base[b] < 0)
        return {
            "mean": float(self.base.mean()),
            **acc.to_dict(),
            "twin_pairs": len(self.twins),
            "toward_right": toward,
            "toward_wrong": away,
            "sign_test_p": stats.sign_test(toward, away),
        }

    def attribution_agreement(self) -> dict | None:
        """Rank agreement of attribution estimates with exact effects: across heads (means) and per item (median)."""
        if self.attribution is None:
            return None
        per_item = [stats.spearman(a, e) for a, e in zip(self.attribution, self.effects)]
        return {
            "spearman_head_means": stats.spearman(self.attribution.mean(0), self.effects.mean(0)),
            "spearman_per_item_median": float(np.median(per_item)),
        }

    def summary(self) -> str:
        """One honest paragraph of what the numbers show."""
        mean, lo, hi = self.head_means()
        k = int(np.argmin(mean))
        H = self.shape[1]
        op, ho, r = self.output_preference(), self.heldout(), self.correlation()
        clear = int(((hi < 0) | (lo > 0)).sum())
        held = (
            f"held out, the head chosen on the other half changes it by {ho['effect']:+.4f} "
            f"[{ho['ci_low']:+.4f}, {ho['ci_high']:+.4f}]; "
            if ho
            else ""
        )
        return (
            f"The plain output prefers the referent in {op['correct']}/{op['n']} items (mean preference "
            f"{op['mean']:+.4f}; twins move toward the right candidate in {op['toward_right']}/{op['twin_pairs']} "
            f"pairs, sign test p {op['sign_test_p']:.3f}). {self.how}-ablating one head changes it by "
            f"{mean[k]:+.4f} [{lo[k]:+.4f}, {hi[k]:+.4f}] at most (L{k // H}H{k % H}); {clear} of {len(mean)} "
            f"heads have an interval excluding 0; {held}weight preference vs causal support across heads: "
            f"Spearman {r.value:+.2f} [{r.low:+.2f}, {r.high:+.2f}]."
        )

    def to_dict(self) -> dict:
        """``{"schema": "qkv.causal", "metric": {"name", "base"}, "how", "model", "source", "items": {"used",
        "skipped"}, "heads": [{"layer", "head", "effect", "ci_low", "ci_high", "weight_preference"}],
        "heldout", "correlation": {"value", "ci_low", "ci_high", "n"}, "output_preference", "attribution",
        "summary"}``."""
        mean, lo, hi = self.head_means()
        wp = self.weight_pref.mean(0)
        H = self.shape[1]
        return {
            "schema": CAUSAL_SCHEMA,
            "version": 1,
            "metric": {"name": "preference", "base": float(self.base.mean())},
            "how": self.how,
            "model": self.model,
            "source": self.source,
            "items": {"used": len(self.used), "skipped": [s.to_dict() for s in self.skipped]},
            "heads": [
                {
                    "layer": k // H,
                    "head": k % H,
                    "effect": float(mean[k]),
                    "ci_low": float(lo[k]),
                    "ci_high": float(hi[k]),
                    "weight_preference": float(wp[k]),
                }
                for k in range(len(mean))
            ],
            "heldout": self.heldout() or None,
            "correlation": self.correlation().to_dict(),
            "output_preference": self.output_preference(),
            "attribution": self.attribution_agreement(),
            "summary": self.summary(),
        }


def _metric(m: Mapped) -> Preference:
    others = tuple(j for c, toks in enumerate(m.candidates) if c != m.item.answer for j in toks)
    return Preference(tuple(m.query), tuple(m.candidates[m.item.answer]), others)


def _item_effects(adapter, target: Target, metric: Preference, ivs: list[Ablate], batch_size: int):
    """``(plain preference, (K,) effects)`` of one item: the plain run is row 0 of the first pass."""
    fn = None
    vals = []
    jobs = [[]] + [iv.edits(target) for iv in ivs]
    for lo in range(0, len(jobs), batch_size):
        fwd = forward_rows(adapter, target, jobs[lo : lo + batch_size])
        fn = fn or metric.bind(target, fwd)
        vals.append(fn(fwd).double().cpu().numpy())
    v = np.concatenate(vals)
    return float(v[0]), v[1:] - v[0]


def _attribution(adapter, target: Target, metric: Preference, how: str, means) -> np.ndarray:
    """``(K,)`` first-order ablation effects: ``grad . (replacement - a)`` summed per head."""
    N = target.info["num_layers"]
    g, a = metric_gradient(adapter, target, metric.bind(target, None), "output", N)  # (N, H, L, D)
    repl = torch.zeros_like(a) if how == "zero" else means.double()[:, :, None, :].expand_as(a)
    return (g * (repl - a)).sum((-1, -2)).reshape(-1).numpy()


def causal_probe(
    items: Dataset | Sequence[Item] | str = "twins",
    model: Any = "minilm",
    *,
    how: str = "zero",
    over: Sequence[str] | None = None,
    pieces: str = "sum",
    attribution: bool = False,
    batch_size: int = 73,
    rounds: int = 1000,
    seed: int = 0,
    splits: int = 21,
    progress=None,
    threads: int | None = 1,
) -> CausalProbe:
    """Ablate every head on every item and measure the output preference (see the module docstring).

    Args:
        items: a :class:`Dataset`, a list of :class:`Item`, a path (``.jsonl`` / WSC ``.xml``) or ``"twins"``.
        model: any model qkv traces.
        how: ``zero`` or ``mean`` (over ``over``, default the twin texts); ``resample`` needs one source per item
            and is not offered here.
        pieces: as for the probe (``sum`` or ``first``).
        attribution: also compute attribution-patching estimates (one backward per item).
        batch_size: rows per forward pass (the plain run and one row per head).
        rounds, seed, splits: bootstrap draws, seed, held-out splits.
        progress: called with ``(done, total)`` after each item.
        threads: torch intra-op threads while measuring (restored; :func:`qkv.lens.effects.torch_threads`).
    """
    with torch_threads(threads):
        return _causal_probe(items, model, how, over, pieces, attribution, batch_size, rounds, seed, splits, progress)


def _causal_probe(items, model, how, over, pieces, attribution, batch_size, rounds, seed, splits, progress):
    if how not in HOWS[:2]:
        raise ValueError(
            f"the causal probe ablates with how = zero or mean, got {how!r}; resample needs a source per item"
        )
    if isinstance(items, str):
        items = load_twins() if items == "twins" else read_items(items)
    data = items if isinstance(items, Dataset) else Dataset(list(items), [], "<items>")
    adapter = adapt(model)
    info = adapter.info()
    N, H = info["num_layers"], info["num_heads"]
    means = reference_means(adapter, "output", over) if how == "mean" else None
    traces = trace_batch([it.text for it in data.items], adapter, steps=("weights",), truncate=True)
    used, skipped, base, effects, wpref, attr = [], list(data.skipped), [], [], [], []
    ivs = [Ablate(n, h, how, "output", None if over is None else tuple(over)) for n in range(N) for h in range(H)]
    for i, (it, t) in enumerate(zip(data.items, traces)):
        m = map_item(it, t, pieces)
        if isinstance(m, Skipped):
            skipped.append(m)
            continue
        target = Target.of(adapter, it.text, truncate=True)
        metric = _metric(m)
        b, e = _item_effects(adapter, target, metric, ivs, batch_size)
        s = item_scores(t, m)  # (N, H, C)
        others = [c for c in range(s.shape[-1]) if c != it.answer]
        used.append(it)
        base.append(b)
        effects.append(e)
        wpref.append((s[..., it.answer] - s[..., others].mean(-1)).reshape(-1))
        if attribution:
            attr.append(_attribution(adapter, target, metric, how, means))
        if progress is not None:
            progress(i + 1, len(data.items))
    if not used:
        raise ValueError("no usable items: every item was skipped; expected items whose spans map to tokens")
    groups = [it.pair if it.pair is not None else f"item:{i}" for i, it in enumerate(used)]
    return CausalProbe(
        info["name"],
        how,
        data.source,
        (N, H),
        [it.id for it in used],
        skipped,
        np.array(base),
        np.stack(effects),
        np.stack(wpref),
        groups,
        _twins(used),
        rounds,
        seed,
        splits,
        np.stack(attr) if attribution else None,
    )
