"""How a token is named: the one rule behind :meth:`Trace.index <qkv.lens.trace.Trace.index>` and
:meth:`Trace.resolve <qkv.lens.trace.Trace.resolve>` (the query and ``prefer``/``over`` pair every view uses).

Functions of anything shaped like a trace (:class:`Tokens`: ``text``, ``tokens``, ``special``, ``span`` and
``vocabulary_note``), kept out of :mod:`qkv.lens.trace` so that the record stays small; they never import it.
"""

from __future__ import annotations

import difflib
import re
from typing import Protocol

from .essay import ESSAY_PAIR, ESSAY_QUERY, ESSAY_SENTENCE, PRONOUNS
from .rows import Resolved

__all__ = ["token_index", "resolve", "spelled", "clean", "Tokens"]


class Tokens(Protocol):
    """What naming a token reads of a :class:`qkv.lens.trace.Trace`."""

    text: str
    tokens: list[str]
    special: list[bool]

    def span(self, start: int, end: int) -> list[int]: ...

    def vocabulary_note(self) -> str | None: ...


def spelled(token: str) -> str:
    """A token as the user would type it: WordPiece ``##``, byte-level ``Ġ``, SentencePiece ``▁`` dropped."""
    t = token[2:] if token.startswith("##") and len(token) > 2 else token
    return t.lstrip("Ġ▁")


def clean(token: str) -> str:
    """:func:`spelled`, lower-cased (to compare tokens whatever their case)."""
    return spelled(token).lower()


def token_index(trace: Tokens, query: str | int) -> int:
    """:meth:`Trace.index <qkv.lens.trace.Trace.index>` (its rule and errors)."""
    L = len(trace.tokens)
    if isinstance(query, bool) or not isinstance(query, (int, str)):
        raise ValueError(
            f"a query token must be a token string ('it'), its n-th occurrence ('it@2') or an integer "
            f"index, got {type(query).__name__} {query!r}"
        )
    if isinstance(query, int):
        if not -L <= query < L:
            raise ValueError(f"token index {query} is out of range; the text has {L} tokens (0..{L - 1})")
        return query % L
    if not query.strip():
        raise ValueError(f"a query token must be a non-empty string or an index, got {query!r}")
    want, nth = query.strip(), 1
    m = re.fullmatch(r"(.+)@(\d+)", want)
    if m and not _matches(trace, want):
        want, nth = m.group(1), int(m.group(2))
    hits = _matches(trace, want)
    if len(hits) >= nth >= 1:
        return hits[nth - 1]
    if hits:
        raise ValueError(
            f"{query!r}: the text has only {len(hits)} occurrence(s) of {want!r}; use {want}@1..{want}@{len(hits)}"
        )
    if re.fullmatch(r"-?\d+", want):
        return token_index(trace, int(want))
    note = trace.vocabulary_note()
    if note:
        raise ValueError(f"token {query!r} is not in the text as the model reads it: {note}")
    pieces = _pieces(trace, want)
    if pieces:
        shown = " ".join(repr(trace.tokens[j]) for j in pieces)
        raise ValueError(
            f"token {query!r} is not one token: the model reads it as {len(pieces)} pieces ({shown}, tokens "
            f"{pieces[0]}..{pieces[-1]}); name one piece (e.g. {spelled(trace.tokens[pieces[0]])!r}) or an "
            f"index (e.g. {pieces[0]})"
        )
    pool = list(dict.fromkeys(clean(tok) for tok, sp in zip(trace.tokens, trace.special) if not sp))
    close = difflib.get_close_matches(want.lower(), pool, n=5, cutoff=0.5)
    hint = f"close matches: {', '.join(close)}" if close else f"tokens are: {' '.join(pool)}"
    raise ValueError(f"token {query!r} is not in the text; {hint}")


def _matches(trace: Tokens, word: str) -> list[int]:
    """Positions whose token is ``word``: with its exact case if any token has it, else ignoring case."""
    exact = [j for j, tok in enumerate(trace.tokens) if word in (tok, spelled(tok))]
    if exact:
        return exact
    low = word.lower()
    return [j for j, tok in enumerate(trace.tokens) if low in (tok.lower(), clean(tok))]


def _pieces(trace: Tokens, word: str) -> list[int]:
    """The tokens of the first whole-word occurrence of ``word`` in the text when it is more than one."""
    for m in re.finditer(rf"(?<!\w){re.escape(word)}(?!\w)", trace.text, flags=re.IGNORECASE):
        toks = trace.span(m.start(), m.end())
        if len(toks) > 1:
            return toks
    return []


def resolve(
    trace: Tokens, query: str | int | None = None, prefer: str | int | None = None, over: str | int | None = None
) -> Resolved:
    """:meth:`Trace.resolve <qkv.lens.trace.Trace.resolve>` (its rule and errors)."""
    if (prefer is None) != (over is None):
        raise ValueError("give both prefer and over (e.g. prefer='cat', over='mat'), or neither")
    if query is None:
        words = [j for j, sp in enumerate(trace.special) if not sp]
        i = next((j for j in words if clean(trace.tokens[j]) in PRONOUNS), words[0] if words else 0)
    else:
        i = token_index(trace, query)
    if prefer is None:
        return Resolved(i, *_essay_pair(trace, i))
    pair = []
    for name, tok in (("prefer", prefer), ("over", over)):
        try:
            pair.append(token_index(trace, tok))
        except ValueError as e:
            raise ValueError(f"{name}: {e}") from None
    if pair[0] == pair[1]:
        raise ValueError(
            f"prefer and over name the same token ({trace.tokens[pair[0]]!r} at {pair[0]}); pick two different tokens"
        )
    return Resolved(i, pair[0], pair[1])


def _essay_pair(trace: Tokens, i: int) -> tuple[int | None, int | None]:
    """The essay's ``(cat, mat)`` indices when this is the essay's sentence and ``i`` its pronoun."""
    if trace.text != ESSAY_SENTENCE:
        return None, None
    try:
        if token_index(trace, ESSAY_QUERY) != i:
            return None, None
        return token_index(trace, ESSAY_PAIR[0]), token_index(trace, ESSAY_PAIR[1])
    except ValueError:  # a tokenizer that splits the essay's words
        return None, None
