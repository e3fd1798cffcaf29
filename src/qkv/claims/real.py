"""Claims 1-5 on a real model: every number comes from traces of the model's actual forward pass.

Each function takes :class:`qkv.lens.Trace` objects (``q, k, v, scores, scaled, weights`` per layer and
head) and pools over sentences, heads, queries and keys per layer. "Unscaled" always means the
counterfactual ``softmax(q.k)`` on the recorded raw scores -- what the trained model would compute if
the ``1/sqrt(d_k)`` were dropped; "scaled" is the model's own ``softmax(q.k/sqrt(d_k))``.

Shape legend: ``N`` layers, ``H`` heads, ``L`` tokens, ``D`` head dim, ``P`` token pairs.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from ..lens.essay import ESSAY_SENTENCE
from ..lens.naming import clean as _clean
from ..lens.trace import Trace
from .measures import cosine_matrix, entropy, max_weight, pearson, softmax_jacobian_norm, spearman, top_mass

__all__ = [
    "CORPUS",
    "ESSAY_SENTENCE",
    "CONTROL_SENTENCE",
    "VarianceLayer",
    "SaturationLayer",
    "SharpnessLayer",
    "DecouplingLayer",
    "PairExample",
    "Coreference",
    "real_variance",
    "real_saturation",
    "real_sharpness",
    "real_decoupling",
    "coreference",
    "linear_weights",
    "independent_variance",
]

#: The minimal pair: one adjective changed so that "it" is the mat.
CONTROL_SENTENCE = "The cat sat on the mat because it was soft."

#: A small built-in corpus of varied English (the essay's sentence and its control included).
CORPUS = (
    ESSAY_SENTENCE,
    CONTROL_SENTENCE,
    "Attention lets every word look at every other word in the sentence.",
    "The query asks a question, the keys answer it, and the values carry the content.",
    "She put the book on the table and then she forgot where it was.",
    "A search engine compares your query with the titles of many pages.",
    "The old bridge over the river was closed after the storm last winter.",
    "Tom gave Anna the keys because he was leaving early in the morning.",
    "Heavy rain fell all night, so the roads were flooded by dawn.",
    "The trophy did not fit into the suitcase because it was too big.",
    "Prices rose sharply when the factory stopped shipping new parts.",
    "My grandmother bakes bread every Sunday and shares it with the neighbours.",
    "The scientists measured the temperature of the lake twice a day.",
    "If you divide the scores by the square root of the dimension, the softmax stays smooth.",
    "The dog chased the ball across the garden until it was exhausted.",
    "Music from the small cafe drifted down the quiet street.",
    "Paris is the capital of France, and Berlin is the capital of Germany.",
    "The committee approved the budget after a long and difficult debate.",
    "He opened the window because the room was hot and stuffy.",
    "Children learn new words quickly when they hear them in stories.",
)


def _layers(traces: Sequence[Trace], need: tuple[str, ...]) -> int:
    if not traces:
        raise ValueError("need at least one trace")
    n = traces[0].num_layers
    for t in traces:
        if t.num_layers != n:
            raise ValueError(f"traces come from different models: {t.num_layers} layers vs {n}")
        missing = [name for name in need if getattr(t, name) is None]
        if missing:
            raise ValueError(f"trace of {t.text!r} lacks {', '.join(missing)}; build it with qkv.trace(text, model)")
    return n


# ------------------------------------------------------------------------------------------ claim 1
@dataclass(frozen=True)
class VarianceLayer:
    """One layer: variance of the components of ``q`` and ``k``, of ``q.k`` and of ``q.k/sqrt(d_k)``.

    Two predictions of ``var_scaled`` show why a real model need not give 1:

    * ``predicted_scaled = var_q * var_k`` -- the essay's assumption: components independent, zero-mean
      and of equal variance (unit variance gives 1);
    * ``predicted_independent`` -- a query and a key drawn independently from the layer's tokens, with the
      measured means ``mu`` and covariances ``S`` per head: ``(tr(Sq Sk) + mu_q^T Sk mu_q + mu_k^T Sq mu_k) / d``,
      pooled over heads (plus the spread of the per-head means ``mu_q.mu_k / sqrt(d)``). When it matches
      ``var_scaled`` the excess comes from the shape of the q and k distributions (a few shared
      high-variance directions), not from which query meets which key.

    ``max_head_scaled`` is the largest per-head scaled variance (one head can dominate a layer).
    """

    layer: int
    d_k: int
    var_q: float
    var_k: float
    var_raw: float
    var_scaled: float
    predicted_scaled: float
    predicted_independent: float
    max_head_scaled: float


def independent_variance(q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and variance of ``q.k / sqrt(d)`` for ``q``, ``k`` drawn independently from the given samples.

    Args:
        q: ``(T, H, D)`` query samples per head; k: ``(T', H, D)`` key samples per head.

    Returns:
        ``(mean, var)`` each ``(H,)``: ``mu_q.mu_k / sqrt(D)`` and
        ``(tr(Sq Sk) + mu_q^T Sk mu_q + mu_k^T Sq mu_k) / D`` with population covariances ``S``.
    """
    q, k = q.double(), k.double()
    D = q.shape[-1]
    mq, mk = q.mean(0), k.mean(0)  # (H, D)
    cq, ck = q - mq, k - mk
    sq = torch.einsum("thi,thj->hij", cq, cq) / q.shape[0]  # (H, D, D)
    sk = torch.einsum("thi,thj->hij", ck, ck) / k.shape[0]
    var = (
        torch.einsum("hij,hji->h", sq, sk)
        + torch.einsum("hi,hij,hj->h", mq, sk, mq)
        + torch.einsum("hi,hij,hj->h", mk, sq, mk)
    ) / D
    return (mq * mk).sum(-1) / D**0.5, var


def real_variance(traces: Sequence[Trace]) -> list[VarianceLayer]:
    """Per layer, pooled over sentences, heads and (query, key) pairs (specials included)."""
    out = []
    for n in range(_layers(traces, ("q", "k"))):
        q = torch.cat([t.q[n].transpose(0, 1) for t in traces])  # (T, H, D): every token of every sentence
        k = torch.cat([t.k[n].transpose(0, 1) for t in traces])  # (T, Hkv, D)
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)  # (T, H, D): the key head of each query head
        raw = torch.cat([t.scores[n].flatten() for t in traces]).double()
        scaled = torch.cat([t.scaled[n].flatten() for t in traces]).double()
        per_head = torch.stack(
            [torch.cat([t.scaled[n, h].flatten() for t in traces]).double().var() for h in range(traces[0].num_heads)]
        )
        mean, var = independent_variance(q, k)
        vq, vk = float(q.double().var()), float(k.double().var())
        out.append(
            VarianceLayer(
                n,
                int(q.shape[-1]),
                vq,
                vk,
                float(raw.var()),
                float(scaled.var()),
                vq * vk,
                float(var.mean() + mean.var(unbiased=False)),
                float(per_head.max()),
            )
        )
    return out


# ------------------------------------------------------------------------------------------ claim 2
@dataclass(frozen=True)
class SaturationLayer:
    """One layer, means over every query row: softmax of the model's scaled scores vs of the raw scores.

    ``log_n`` is the mean ``log(keys)``: the entropy of a uniform row, for reference.
    """

    layer: int
    max_scaled: float
    max_unscaled: float
    entropy_scaled: float
    entropy_unscaled: float
    jacobian_scaled: float
    jacobian_unscaled: float
    log_n: float

    @property
    def jacobian_ratio(self) -> float:
        """``jacobian_unscaled / jacobian_scaled``: below 1, dropping the scale shrinks the gradient."""
        return self.jacobian_unscaled / self.jacobian_scaled if self.jacobian_scaled > 0 else float("inf")


def _row_means(ps: list[Tensor]) -> tuple[float, float, float]:
    mx = torch.cat([max_weight(p).flatten().double() for p in ps]).mean()
    h = torch.cat([entropy(p).flatten() for p in ps]).mean()
    j = torch.cat([softmax_jacobian_norm(p).flatten() for p in ps]).mean()
    return float(mx), float(h), float(j)


def real_saturation(traces: Sequence[Trace]) -> list[SaturationLayer]:
    """Per layer: mean max weight, entropy and ``||diag(p) - p p^T||_F`` with and without the scale."""
    out = []
    for n in range(_layers(traces, ())):
        scaled = [t.weights[n] for t in traces]  # the model's own weights, (H, L, L) each
        unscaled = [torch.softmax(t.scores[n].double(), dim=-1) for t in traces]
        ms, hs, js = _row_means(scaled)
        mu, hu, ju = _row_means(unscaled)
        log_n = float(np.mean([math.log(len(t)) for t in traces]))
        out.append(SaturationLayer(n, ms, mu, hs, hu, js, ju, log_n))
    return out


# ------------------------------------------------------------------------------------------ claim 3
@dataclass(frozen=True)
class SharpnessLayer:
    """One layer, means over every query row of the model's weights.

    ``top1``/``top3``: mass of the heaviest 1 / 3 keys; ``uniform1``/``uniform3``: the same for a
    uniform row (``1/n``, ``3/n``); ``top1_linear``: the top-1 mass if the same scores were normalised
    linearly (``(s - min s) / sum(s - min s)``) instead of exponentially; ``top1_special``: share of rows
    whose heaviest key is a special token (``[CLS]``, ``[SEP]``).
    """

    layer: int
    top1: float
    top3: float
    uniform1: float
    uniform3: float
    top1_linear: float
    top1_special: float

    @property
    def sharpness(self) -> float:
        """``top1 / uniform1``: how many times a uniform row's top-1 mass the heaviest key takes."""
        return self.top1 / self.uniform1


def linear_weights(scores: Tensor) -> Tensor:
    """Scores normalised without the exponential: ``(s - min s) / sum(s - min s)`` per row (uniform if flat)."""
    shifted = scores.double() - scores.double().amin(-1, keepdim=True)
    total = shifted.sum(-1, keepdim=True)
    flat = total <= 0
    return torch.where(flat, torch.full_like(shifted, 1.0 / scores.shape[-1]), shifted / total.clamp_min(1e-300))


def real_sharpness(traces: Sequence[Trace]) -> list[SharpnessLayer]:
    """Per layer: how much of the mass the top-1 / top-3 keys take, against a uniform row."""
    out = []
    for n in range(_layers(traces, ())):
        top1, top3, u1, u3, lin, special = [], [], [], [], [], []
        for t in traces:
            w = t.weights[n].double()  # (H, L, L)
            L = w.shape[-1]
            top1.append(top_mass(w, 1).flatten())
            top3.append(top_mass(w, 3).flatten())
            u1.append(torch.full((w[..., 0].numel(),), 1.0 / L, dtype=torch.float64))
            u3.append(torch.full((w[..., 0].numel(),), min(3, L) / L, dtype=torch.float64))
            lin.append(top_mass(linear_weights(t.scaled[n]), 1).flatten())
            is_special = torch.tensor(t.special, dtype=torch.float64)  # (L,)
            special.append(is_special[w.argmax(-1)].flatten())
        m = [float(torch.cat(x).mean()) for x in (top1, top3, u1, u3, lin, special)]
        out.append(SharpnessLayer(n, *m))
    return out


# ------------------------------------------------------------------------------------------ claim 4
@dataclass(frozen=True)
class DecouplingLayer:
    """One layer: correlation, across token pairs, of key cosine similarity and value cosine similarity.

    Computed per head over all pairs of non-special tokens of the same sentence (``pairs`` of them);
    ``pearson``/``spearman`` are the means over heads, ``spearman_min``/``spearman_max`` the range.
    """

    layer: int
    pearson: float
    spearman: float
    spearman_min: float
    spearman_max: float
    pairs: int


@dataclass(frozen=True)
class PairExample:
    """Two tokens of one sentence (at ``first_index``, ``second_index``) whose keys in one head are close but
    whose values differ."""

    layer: int
    head: int
    sentence: str
    first: str
    second: str
    first_index: int
    second_index: int
    key_cos: float
    value_cos: float


def real_decoupling(traces: Sequence[Trace], close_key_cos: float = 0.8) -> tuple[list[DecouplingLayer], PairExample]:
    """Per layer and head: Pearson/Spearman of key vs value cosine similarity over token pairs.

    Returns the per-layer rows and the pair (over all layers, heads and distinct token strings) with the
    largest ``key_cos - value_cos`` among pairs whose ``key_cos >= close_key_cos`` (or among all
    pairs when none is that close).
    """
    N = _layers(traces, ("k", "v"))
    key_cos, value_cos, where = [], [], []  # per sentence: (N, Hkv, P), (N, Hkv, P), [(t, i, j)] * P
    for s, t in enumerate(traces):
        idx = [j for j in range(len(t)) if not t.special[j]]
        if len(idx) < 2:
            continue
        iu = torch.triu_indices(len(idx), len(idx), offset=1)  # (2, P)
        kc = cosine_matrix(t.k[:, :, idx])[..., iu[0], iu[1]]  # (N, Hkv, P)
        vc = cosine_matrix(t.v[:, :, idx])[..., iu[0], iu[1]]
        key_cos.append(kc)
        value_cos.append(vc)
        where += [(s, idx[a], idx[b]) for a, b in iu.T.tolist()]
    if not where or len(where) < 3:
        raise ValueError("need at least 3 pairs of non-special tokens to correlate key and value similarity")
    kc, vc = torch.cat(key_cos, -1).numpy(), torch.cat(value_cos, -1).numpy()  # (N, Hkv, P)
    rows = []
    for n in range(N):
        pr = [pearson(kc[n, h], vc[n, h]) for h in range(kc.shape[1])]
        sr = [spearman(kc[n, h], vc[n, h]) for h in range(kc.shape[1])]
        rows.append(
            DecouplingLayer(
                n, float(np.nanmean(pr)), float(np.nanmean(sr)), float(np.nanmin(sr)), float(np.nanmax(sr)), len(where)
            )
        )
    distinct = np.array([_clean(traces[s].tokens[i]) != _clean(traces[s].tokens[j]) for s, i, j in where])
    gap = np.where(distinct[None, None, :], kc - vc, -np.inf)
    if (np.where(distinct[None, None, :], kc, -np.inf) >= close_key_cos).any():
        gap = np.where(kc >= close_key_cos, gap, -np.inf)
    n, h, p = np.unravel_index(int(np.argmax(gap)), gap.shape)
    s, i, j = where[p]
    t = traces[s]
    example = PairExample(
        int(n), int(h), t.text, t.tokens[i], t.tokens[j], i, j, float(kc[n, h, p]), float(vc[n, h, p])
    )
    return rows, example


# ------------------------------------------------------------------------------------------ claim 5
@dataclass(frozen=True)
class Coreference:
    """Does ``query`` ("it") attend to ``referent`` ("cat") more than to ``other`` ("mat")?

    ``margin = weight(referent) - weight(other)`` per head. ``best`` lists the top heads on the
    sentence as ``(layer, head, margin, control_margin)``, where ``control_margin`` is the same head's
    margin on the control sentence (in which ``query`` refers to ``other``: a head that follows the
    referent turns negative there, a head that follows the first noun stays positive).
    ``referent_heads``: heads with ``margin >= tau`` and ``control_margin <= -tau``; ``first_noun_heads``:
    heads with both ``>= tau``.
    """

    sentence: str
    control: str
    query: str
    referent: str
    other: str
    best: tuple[tuple[int, int, float, float], ...]
    mean_margin: float
    mean_control_margin: float
    mean_referent_weight: float
    mean_other_weight: float
    referent_heads: int
    first_noun_heads: int
    heads: int
    tau: float

    def to_dict(self) -> dict:
        d = asdict(self)
        d["best"] = [{"layer": a, "head": b, "margin": m, "control_margin": c} for a, b, m, c in self.best]
        return d


def coreference(
    sentence: Trace,
    control: Trace,
    query: str = "it",
    referent: str = "cat",
    other: str = "mat",
    tau: float = 0.05,
    top: int = 3,
) -> Coreference:
    """Rank every head by ``weight(query -> referent) - weight(query -> other)`` and check the control."""
    main = {(p.layer, p.head): p for p in sentence.heads(query, referent, other)}
    ctrl = {(p.layer, p.head): p.diff for p in control.heads(query, referent, other)}
    if set(main) != set(ctrl):
        raise ValueError("the sentence and its control must be traced through the same model")
    ranked = sorted(main.values(), key=lambda p: -p.diff)
    best = tuple((p.layer, p.head, p.diff, ctrl[(p.layer, p.head)]) for p in ranked[:top])
    margins = np.array([p.diff for p in ranked])
    controls = np.array([ctrl[(p.layer, p.head)] for p in ranked])
    return Coreference(
        sentence=sentence.text,
        control=control.text,
        query=query,
        referent=referent,
        other=other,
        best=best,
        mean_margin=float(margins.mean()),
        mean_control_margin=float(controls.mean()),
        mean_referent_weight=float(np.mean([p.prefer for p in ranked])),
        mean_other_weight=float(np.mean([p.over for p in ranked])),
        referent_heads=int(((margins >= tau) & (controls <= -tau)).sum()),
        first_noun_heads=int(((margins >= tau) & (controls >= tau)).sum()),
        heads=len(ranked),
        tau=tau,
    )
