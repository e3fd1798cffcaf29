"""Interventions at the essay's named steps, as data: ablate a head, knock out an edge, swap two tokens' Q, K or V,
patch a step's tensor from another run.

An intervention says *what* (a layer, a head, tokens) and *how*; :func:`compile_hooks` turns a list of them into
one hook set (:mod:`qkv.nn.hooks`) for a text, and ``qkv.trace(text, interventions=[...])`` runs the model under
it. Nothing is left installed afterwards, and the model's weights are never touched::

    q, k, v ──▶ swap(step="q"|"k"|"v")          two tokens exchange their rows
    weights ──▶ knockout(query, keys)           edges set to 0, the row renormalised over the rest
    output  ──▶ ablate(how="zero"|"mean"|"resample"), patch(source, step)   one head's output, before W_O

``layer=None`` addresses every layer, ``head=None`` every head of the layer. Tokens are named as
:meth:`qkv.lens.trace.Trace.index` takes them: a token string (first match), ``"word@n"`` (n-th match) or an
index. Interventions compose in the order given (each sees what the previous left).

Example:
    >>> import qkv
    >>> from qkv import lens
    >>> base = qkv.trace("The cat sat on the mat because it was tired.")
    >>> t = qkv.trace(base.text, interventions=[lens.knockout(layer=3, head=1, query="it", keys=["cat"])])
    >>> i, j = t.index("it"), t.index("cat")
    >>> float(t.weights[3, 1, i, j]), round(float(t.weights[3, 1, i].sum()), 5)
    (0.0, 1.0)

Shapes (one row of a batch, as edits see it): q ``(Hq, L, D)``, k/v ``(Hkv, L, D)``, weights ``(Hq, L, L)``,
output ``(Hq, L, Dv)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from ..nn.hooks import STEP_NAMES
from .adapters import ModelAdapter
from .build import build_traces
from .trace import Trace

__all__ = [
    "Intervention",
    "Ablate",
    "Knockout",
    "Swap",
    "Patch",
    "ablate",
    "knockout",
    "swap",
    "patch",
    "Edit",
    "RowHooks",
    "Target",
    "compile_hooks",
    "compile_edits",
    "HOWS",
    "VECTOR_STEPS",
    "KINDS",
    "from_dict",
]

#: Ablation methods: zero the head, its mean over reference texts, or its tensor from another text.
HOWS = ("zero", "mean", "resample")
#: Steps holding one vector per token and head (ablated, swapped and patched per token).
VECTOR_STEPS = ("q", "k", "v", "output")


def _fail(what: str, got: Any, fix: str) -> ValueError:
    return ValueError(f"{what}, got {got!r}; {fix}")


@dataclass(frozen=True)
class Edit:
    """One change to one batch row: at point ``name`` (``layers.3.attention.output``), ``fn(row) -> row``."""

    name: str
    fn: Callable[[Tensor], Tensor]


class RowHooks:
    """A hook set (:class:`qkv.nn.hooks.HookSet`) applying ``rows[b]``'s edits to batch row ``b`` only.

    One text under interventions is one row; a sweep runs copies of a text, each row with another head's edit.
    """

    def __init__(self, rows: Sequence[Sequence[Edit]]):
        self.by_name: dict[str, list[tuple[int, Edit]]] = {}
        for b, edits in enumerate(rows):
            for e in edits:
                self.by_name.setdefault(e.name, []).append((b, e))
        self.prefixes = {n.rsplit(".", 1)[0] for n in self.by_name}

    def wants(self, name: str) -> bool:
        return name in self.by_name or name in self.prefixes

    def apply(self, name: str, tensor: Tensor) -> Tensor | None:
        edits = self.by_name.get(name)
        if not edits:
            return None
        out = tensor.clone()
        for b, e in edits:
            if b >= out.shape[0]:
                raise ValueError(f"an edit addresses batch row {b} but the pass has {out.shape[0]} rows")
            out[b] = e.fn(out[b])
        return out


@dataclass
class Target:
    """What interventions are compiled against: the text, its tokens and the model (for reference runs)."""

    adapter: ModelAdapter
    text: str
    tokens: list[str]
    special: list[bool]
    offsets: list[tuple[int, int]] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)

    @classmethod
    def of(cls, adapter: ModelAdapter, text: str, *, truncate: bool = False) -> Target:
        enc = adapter.encode(text, truncate=truncate)
        return cls(adapter, text, list(enc.tokens), list(enc.special), list(enc.offsets), list(enc.ids))

    @cached_property
    def info(self) -> dict:
        return self.adapter.info()

    @cached_property
    def stub(self) -> Trace:
        """A trace holding only the tokens (to resolve token names exactly as :meth:`Trace.index` does)."""
        L = len(self.tokens)
        return Trace.from_tensors(
            self.text,
            self.tokens,
            weights=torch.zeros(1, 1, L, L),
            offsets=self.offsets or None,
            special=self.special,
            model={"name": self.info["name"]},
        )

    def index(self, token) -> int:
        return self.stub.index(token)

    def layers(self, layer: int | None) -> list[int]:
        N = self.info["num_layers"]
        if layer is None:
            return list(range(N))
        if not isinstance(layer, int) or isinstance(layer, bool) or not -N <= layer < N:
            raise _fail(
                f"layer must be an int in 0..{N - 1} or None (every layer)",
                layer,
                f"{self.info['name']} has {N} layers",
            )
        return [layer % N]

    def heads(self, head: int | None, step: str) -> list[int]:
        kv = step in ("k", "v")
        H = self.info["num_kv_heads" if kv else "num_heads"]
        kind = "key/value heads" if kv else "heads"
        if head is None:
            return list(range(H))
        if not isinstance(head, int) or isinstance(head, bool) or not -H <= head < H:
            raise _fail(
                f"head must be an int in 0..{H - 1} or None (every head)",
                head,
                f"{self.info['name']} has {H} {kind} for step {step!r}",
            )
        return [head % H]


def _check_step(step: str, allowed: Sequence[str], what: str) -> str:
    if step not in allowed:
        raise _fail(f"{what} step must be one of {', '.join(allowed)}", step, "pick one of those names")
    return step


def _tokens(target: Target, tokens: Sequence | None) -> list[int] | None:
    return None if tokens is None else [target.index(t) for t in tokens]


class Intervention:
    """Base class: :meth:`edits` compiles the intervention against a text into per-row edits."""

    how: str = "intervention"

    def edits(self, target: Target) -> list[Edit]:  # pragma: no cover - abstract
        raise NotImplementedError  # abstract: subclasses must implement

    def describe(self) -> str:
        return repr(self)


def _set_heads(row: Tensor, heads: list[int], positions: list[int] | None, value: Tensor | float) -> Tensor:
    """``row[h, positions] = value`` for each head; ``value`` is a scalar, a per-head mean ``(H, D)`` (broadcast
    over tokens) or a per-head tensor ``(H, L, ...)`` (taken at the same positions)."""
    for h in heads:
        v = value if not isinstance(value, Tensor) else value[h].to(row)
        if positions is None:
            row[h] = v
        else:
            row[h, positions] = v[positions] if isinstance(v, Tensor) and v.dim() == row[h].dim() else v
    return row


@dataclass(frozen=True)
class Ablate(Intervention):
    """Remove a head's contribution at ``step`` (``output``: before the output projection).

    ``how="zero"`` sets it to 0; ``"mean"`` to its mean over every token of the reference texts ``over``
    (default: the shipped twin texts); ``"resample"`` to its tensor on ``source`` (a text or a :class:`Trace` of
    the same token count). ``positions`` limits the edit to some tokens (default every token).
    """

    layer: int | None
    head: int | None = None
    how: str = "zero"
    step: str = "output"
    over: tuple[str, ...] | None = None
    source: Any = None
    positions: tuple | None = None

    def edits(self, target: Target) -> list[Edit]:
        _check_step(self.step, VECTOR_STEPS, "ablate")
        if self.how not in HOWS:
            raise _fail(
                f"how must be one of {', '.join(HOWS)}", self.how, 'use how="zero" (default), "mean" or "resample"'
            )
        if self.how == "mean" and self.over is not None and not self.over:
            raise _fail(
                'how="mean" needs reference texts',
                self.over,
                "pass over=[texts...] or leave it None for the twin texts",
            )
        if self.how == "resample" and self.source is None:
            raise _fail('how="resample" needs a source', None, "pass source=TEXT (or a Trace) of the same token count")
        pos = _tokens(target, self.positions)
        heads = self.heads_for(target)
        out = []
        for n in target.layers(self.layer):
            name = f"{target.adapter.attention_name(n)}.{self.step}"
            if self.how == "zero":
                value: Tensor | float = 0.0
            elif self.how == "mean":
                value = reference_means(target.adapter, self.step, self.over)[n]  # (H, D)
            else:
                value = source_tensor(target, self.source, self.step)[n]  # (H, L, D)
            out.append(Edit(name, _setter(heads, pos, value)))
        return out

    def heads_for(self, target: Target) -> list[int]:
        return target.heads(self.head, self.step)


def _setter(heads: list[int], pos: list[int] | None, value) -> Callable[[Tensor], Tensor]:
    return lambda row: _set_heads(row, heads, pos, value)


@dataclass(frozen=True)
class Patch(Intervention):
    """Replace a step's tensor of one head (``head=None``: every head) with the one ``source`` computed.

    ``source`` is a :class:`Trace` (recorded with that step) or a text of the same token count (traced with the
    same model). Steps: ``q, k, v, scores, scaled, weights, output``; ``positions`` limits it to some query tokens.
    """

    source: Any
    layer: int | None
    head: int | None = None
    step: str = "output"
    positions: tuple | None = None
    how: str = "patch"

    def edits(self, target: Target) -> list[Edit]:
        _check_step(self.step, STEP_NAMES, "patch")
        pos = _tokens(target, self.positions)
        heads = target.heads(self.head, self.step)
        src = source_tensor(target, self.source, self.step)  # (N, H, L, ...)
        return [
            Edit(f"{target.adapter.attention_name(n)}.{self.step}", _setter(heads, pos, src[n]))
            for n in target.layers(self.layer)
        ]


@dataclass(frozen=True)
class Knockout(Intervention):
    """Remove query -> key edges: their weights become exactly 0 and each row is renormalised over the rest
    (rows still sum to 1). ``query=None`` cuts the edges from every query."""

    layer: int | None
    head: int | None = None
    query: Any = None
    keys: tuple = ()
    how: str = "knockout"

    def edits(self, target: Target) -> list[Edit]:
        if not self.keys:
            raise _fail(
                "knockout needs keys (the edges' key tokens)", self.keys, 'pass keys=["cat"] (words or indices)'
            )
        keys = [target.index(t) for t in self.keys]
        rows = None if self.query is None else [target.index(self.query)]
        heads = target.heads(self.head, "weights")
        fn = _cutter(heads, rows, keys, target.tokens)
        return [Edit(f"{target.adapter.attention_name(n)}.weights", fn) for n in target.layers(self.layer)]


def _cutter(heads: list[int], rows: list[int] | None, keys: list[int], tokens: list[str]):
    def cut(w: Tensor) -> Tensor:  # w (H, Lq, Lk)
        for h in heads:
            sel = (w[h] if rows is None else w[h, rows]).clone()  # (q, Lk)
            had = sel.sum(-1, keepdim=True) > 0  # rows with something to attend to (not fully masked)
            sel[:, keys] = 0
            total = sel.sum(-1, keepdim=True)
            if bool((had & (total <= 0)).any()):
                raise ValueError(
                    f"knockout of keys {[tokens[k] for k in keys]} leaves a query row with nothing to attend to; "
                    "expected at least one key with weight left; cut fewer keys"
                )
            sel = torch.where(had, sel / total.clamp_min(torch.finfo(sel.dtype).tiny), sel)
            if rows is None:
                w[h] = sel
            else:
                w[h, rows] = sel
        return w

    return cut


@dataclass(frozen=True)
class Swap(Intervention):
    """Exchange two tokens' ``q``, ``k`` or ``v`` rows (``head=None``: every head; for ``k``/``v`` a key/value
    head). Swapping K swaps the two tokens' scores for every query; swapping V keeps the weights and swaps what
    the two tokens carry."""

    layer: int | None
    step: str = "v"
    tokens: tuple = ()
    head: int | None = None
    how: str = "swap"

    def edits(self, target: Target) -> list[Edit]:
        _check_step(self.step, ("q", "k", "v"), "swap")
        if len(self.tokens) != 2:
            raise _fail("swap needs exactly two tokens", self.tokens, 'pass tokens=("cat", "mat")')
        a, b = (target.index(t) for t in self.tokens)
        if a == b:
            raise _fail("swap needs two different tokens", self.tokens, "name two distinct tokens")
        heads = target.heads(self.head, self.step)

        def fn(row: Tensor) -> Tensor:  # (H, L, D)
            row[heads, a], row[heads, b] = row[heads, b].clone(), row[heads, a].clone()
            return row

        return [Edit(f"{target.adapter.attention_name(n)}.{self.step}", fn) for n in target.layers(self.layer)]


# ------------------------------------------------------------------------------------------ constructors
def ablate(
    layer: int | None,
    head: int | None = None,
    *,
    how: str = "zero",
    step: str = "output",
    over: Sequence[str] | None = None,
    source: Any = None,
    positions: Sequence | None = None,
) -> Ablate:
    """Ablate head ``head`` of layer ``layer`` (see :class:`Ablate`)."""
    return Ablate(layer, head, how, step, None if over is None else tuple(over), source, _tuple(positions))


def knockout(layer: int | None, head: int | None = None, *, query: Any = None, keys: Sequence = ()) -> Knockout:
    """Knock out the edges ``query -> keys`` (see :class:`Knockout`)."""
    if isinstance(keys, (str, int)):
        keys = [keys]
    return Knockout(layer, head, query, tuple(keys))


def swap(layer: int | None, step: str = "v", tokens: Sequence = (), head: int | None = None) -> Swap:
    """Swap two tokens' ``step`` (``q``, ``k`` or ``v``) rows (see :class:`Swap`)."""
    return Swap(layer, step, tuple(tokens), head)


def patch(
    source: Any, layer: int | None, head: int | None = None, step: str = "output", positions: Sequence | None = None
) -> Patch:
    """Patch ``step`` of ``head`` in ``layer`` from ``source`` (a Trace or a text; see :class:`Patch`)."""
    return Patch(source, layer, head, step, _tuple(positions))


def _tuple(x) -> tuple | None:
    if x is None:
        return None
    return (x,) if isinstance(x, (str, int)) else tuple(x)


# ------------------------------------------------------------------------------------------ reference runs
_MEANS: dict[tuple, Tensor] = {}


def default_reference_texts() -> list[str]:
    """The documented default of ``how="mean"``: the distinct texts of the shipped twin pairs."""
    from .probe_io import load_twins

    return list(dict.fromkeys(it.text for it in load_twins().items))


def reference_means(adapter: ModelAdapter, step: str, over: Sequence[str] | None) -> Tensor:
    """``(N, H, D)`` mean of ``step`` over every token of the reference texts (cached per model and texts)."""
    texts = tuple(default_reference_texts() if over is None else over)
    key = (id(adapter.model), step, texts)
    if key not in _MEANS:
        traces = build_traces(adapter, list(texts), steps=[step], truncate=True)
        total = sum(getattr(t, step).sum(2) for t in traces)  # (N, H, D)
        _MEANS[key] = total / sum(len(t) for t in traces)
    return _MEANS[key]


def source_tensor(target: Target, source: Any, step: str) -> Tensor:
    """``(N, H, L, ...)`` ``step`` of ``source`` (a Trace, or a text traced with the target's model), checked to
    have the target's token count."""
    if isinstance(source, str):
        source = build_traces(target.adapter, [source], steps=[step])[0]
    if not isinstance(source, Trace):
        raise _fail("a source is a Trace or a text", type(source).__name__, "pass qkv.trace(other_text) or the text")
    t = getattr(source, step)
    if t is None:
        raise _fail(f"the source trace did not record {step!r}", None, f"trace it with steps including {step!r}")
    if len(source) != len(target.tokens):
        raise ValueError(
            f"the source run has {len(source)} tokens but the text has {len(target.tokens)}; expected the same "
            f"token count (position i patches position i): pick a source text that tokenizes to "
            f"{len(target.tokens)} tokens"
        )
    return t


def compile_hooks(target: Target, interventions: Sequence[Intervention]) -> RowHooks:
    """One hook set applying ``interventions`` in order to a single-text pass (batch row 0)."""
    return RowHooks([compile_edits(target, interventions)])


def compile_edits(target: Target, interventions: Sequence[Intervention]) -> list[Edit]:
    """The edits of ``interventions`` on ``target``'s text, in order (checked: a bad layer, head, token or step
    raises ValueError before the model runs)."""
    edits: list[Edit] = []
    for i, iv in enumerate(interventions):
        if not isinstance(iv, Intervention):
            raise _fail(
                f"interventions[{i}] must be made by lens.ablate/knockout/swap/patch",
                type(iv).__name__,
                "build it with qkv.lens.ablate(...) and friends",
            )
        edits.extend(iv.edits(target))
    return edits


#: ``kind`` of an intervention in JSON (``POST /api/intervene``) -> its constructor's keyword arguments.
KINDS = {
    "ablate": ("layer", "head", "how", "step", "over", "source", "positions"),
    "knockout": ("layer", "head", "query", "keys"),
    "swap": ("layer", "step", "tokens", "head"),
    "patch": ("source", "layer", "head", "step", "positions"),
}


def from_dict(d: dict) -> Intervention:
    """An intervention from JSON data: ``{"kind": "ablate"|"knockout"|"swap"|"patch", ...its arguments}``
    (``source`` of ``patch``/``resample`` is a text).

    Example:
        >>> from_dict({"kind": "swap", "layer": 2, "step": "k", "tokens": ["cat", "mat"]})
        Swap(layer=2, step='k', tokens=('cat', 'mat'), head=None, how='swap')
    """
    if not isinstance(d, dict) or d.get("kind") not in KINDS:
        got = d.get("kind") if isinstance(d, dict) else type(d).__name__
        raise _fail(
            f"an intervention is an object with kind one of {', '.join(KINDS)}",
            got,
            'e.g. {"kind": "ablate", "layer": 3, "head": 1}',
        )
    kind = d["kind"]
    extra = sorted(set(d) - {"kind", *KINDS[kind]})
    if extra:
        raise _fail(f"{kind} takes {', '.join(KINDS[kind])}", extra, "drop the other fields")
    args = {k: v for k, v in d.items() if k != "kind"}
    makers: dict[str, Callable[..., Intervention]] = {
        "ablate": ablate,
        "knockout": knockout,
        "swap": swap,
        "patch": patch,
    }
    make = makers[kind]
    try:
        return make(**args)
    except TypeError as e:
        raise _fail(f"{kind} needs {', '.join(KINDS[kind])}", sorted(args), f"give the missing fields ({e})") from None
