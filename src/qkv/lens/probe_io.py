"""Probe items from files: qkv's JSONL schema and the Winograd Schema Challenge XML as distributed.

**JSONL** (one JSON object per line; blank lines and lines starting with ``#`` are ignored)::

    {"id": "cat-tired",                      # optional; default "line N"
     "text": "The cat sat on the mat because it was tired.",
     "query": {"text": "it", "start": 31},  # or "it" when it occurs once (whole word, any case)
     "candidates": [{"text": "The cat", "start": 0}, {"text": "the mat", "start": 15}],  # >= 2; or strings
     "answer": 0,                            # index into candidates, or the text of one of them
     "pair": "cat"}                          # optional: items sharing it are twins

A span's ``start`` is a character offset into ``text`` (``text[start:start+len(span)]`` must equal the
span, ignoring case). A candidate given as a plain string is its first whole-word occurrence (give
``start`` to pick another); a candidate that does not occur is *skipped* with a reason, not an error.

**WSC XML** (``WSCollection.xml``): ``<schema>`` elements with ``<text><txt1/><pron/><txt2/></text>``,
``<answers><answer/>...</answers>`` and ``<correctAnswer>`` (``A``, ``B``, ...). The text is
``txt1 + " " + pron + " " + txt2`` (no space before ``txt2`` starting with punctuation); the pronoun's
span is known exactly. An answer is located by the first whole-word occurrence before the pronoun (else
anywhere), or failing that its head word's (see :func:`head_word`). Consecutive schemas
with the same answers (ignoring case and a leading "the") share a pair id: the twins.

Malformed input raises ``ValueError`` naming the file, the line and the field.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "Span",
    "head_word",
    "DETERMINERS",
    "PREPOSITIONS",
    "Item",
    "Skipped",
    "Dataset",
    "read_items",
    "parse_jsonl",
    "parse_items",
    "parse_wsc_xml",
    "twins_path",
    "load_twins",
    "find_word",
]


@dataclass(frozen=True)
class Span:
    """``text`` at characters ``[start, end)`` of an item's text."""

    text: str
    start: int
    end: int


#: Words dropped from the front of a candidate before its head word is chosen.
DETERMINERS = frozenset("the a an this that these those his her its their my your our some every each".split())
#: A candidate is cut before the first of these (after its first word): "the sack of potatoes" -> "the sack".
PREPOSITIONS = frozenset(
    "of in on at with from for to by about under over near behind into onto without between".split()
)


def head_word(span: Span) -> Span:
    """The head noun of a candidate, by a simple documented rule.

    1. words are runs of letters/digits (apostrophes and hyphens inside a word kept, a trailing ``'s`` dropped);
    2. the candidate is cut before its first preposition (:data:`PREPOSITIONS`) that is not its first word;
    3. the head is the last remaining word that is not a determiner (:data:`DETERMINERS`).

    "The sack of potatoes" -> "sack"; "the brown suitcase" -> "suitcase"; "Mr. Smith" -> "Smith".

    Example:
        >>> head_word(Span("The sack of potatoes", 4, 24))
        Span(text='sack', start=8, end=12)
    """
    words = [(m.group(0), m.start()) for m in re.finditer(r"\w+(?:['’-]\w+)*", span.text)]
    words = [(w[:-2], s) if re.search(r"['’]s$", w, re.IGNORECASE) and len(w) > 2 else (w, s) for w, s in words]
    cut = next((i for i, (w, _) in enumerate(words) if i > 0 and w.lower() in PREPOSITIONS), len(words))
    content = [ws for ws in words[:cut] if ws[0].lower() not in DETERMINERS] or words[:cut] or words
    if not content:
        return span
    w, s = content[-1]
    return Span(w, span.start + s, span.start + s + len(w))


@dataclass(frozen=True)
class Item:
    """One probe item: a text, the query (pronoun) span, ``C >= 2`` candidate spans and the right one."""

    id: str
    text: str
    query: Span
    candidates: tuple[Span, ...]
    answer: int
    pair: str | None = None
    line: int | None = None


@dataclass(frozen=True)
class Skipped:
    """An item the probe could not use, and why."""

    id: str
    line: int | None
    reason: str

    def to_dict(self) -> dict:
        return {"id": self.id, "line": self.line, "reason": self.reason}


@dataclass
class Dataset:
    """Items read from ``source`` and those skipped while reading (each with a reason)."""

    items: list[Item]
    skipped: list[Skipped] = field(default_factory=list)
    source: str = ""

    @property
    def total(self) -> int:
        return len(self.items) + len(self.skipped)


def find_word(text: str, word: str, before: int | None = None) -> int | None:
    """Start of the first whole-word, case-insensitive occurrence of ``word`` in ``text`` (``None`` if absent).

    With ``before``, an occurrence ending at or before that offset is preferred.
    """
    hits = [m.start() for m in re.finditer(r"(?<!\w)" + re.escape(word) + r"(?!\w)", text, flags=re.IGNORECASE)]
    if before is not None:
        early = [h for h in hits if h + len(word) <= before]
        hits = early or hits
    return hits[0] if hits else None


class _Bad(ValueError):
    pass


def _span(raw, text: str, where: str, *, optional_missing: bool) -> Span | None:
    """A span from ``"word"`` or ``{"text": "word", "start": int}``; None if a plain word is absent."""
    if isinstance(raw, str):
        word, start = raw, None
    elif isinstance(raw, dict) and isinstance(raw.get("text"), str):
        word, start = raw["text"], raw.get("start")
        if start is not None and (not isinstance(start, int) or isinstance(start, bool)):
            raise _Bad(f"{where}: 'start' must be an integer character offset, got {start!r}")
    else:
        raise _Bad(f'{where}: expected a string or {{"text": str, "start": int}}, got {json.dumps(raw)[:60]}')
    if not word.strip():
        raise _Bad(f"{where}: the span text is empty; give the word as it appears in 'text'")
    if start is None:
        start = find_word(text, word)
        if start is None:
            if optional_missing:
                return None
            raise _Bad(f"{where}: {word!r} does not occur in the text; give the word as it appears in 'text'")
        return Span(text[start : start + len(word)], start, start + len(word))
    end = start + len(word)
    if start < 0 or end > len(text):
        raise _Bad(f"{where}: span {word!r} at {start}..{end} is out of range; the text has {len(text)} characters")
    if text[start:end].lower() != word.lower():
        at = find_word(text, word)
        raise _Bad(
            f"{where}: text[{start}:{end}] is {text[start:end]!r}, not {word!r}; fix 'start' "
            + (f"(the word occurs at {at})" if at is not None else "(the word does not occur in the text)")
        )
    return Span(text[start:end], start, end)


def _item(obj, n: int, source: str, *, loc: str | None = None, unit: str = "line") -> Item | Skipped:
    """One item from a parsed JSON value; ``loc`` names it in errors (default ``source:n``), ``unit`` is what
    holds one item ("line" in a file, "item" in a list) and names the default id (``line N``)."""
    loc = loc or f"{source}:{n}"

    def where(f: str) -> str:
        return f"{loc}: field {f!r}"

    if not isinstance(obj, dict):
        raise _Bad(f"{loc}: expected a JSON object per {unit}, got {type(obj).__name__}")
    for key in ("text", "query", "candidates", "answer"):
        if key not in obj:
            raise _Bad(
                f"{loc}: missing field {key!r}; each {unit} needs text, query, candidates and answer "
                f"(see qkv.lens.probe_io)"
            )
    text, ident = obj["text"], str(obj.get("id", f"{unit} {n}"))
    if not isinstance(text, str) or not text.strip():
        raise _Bad(f"{where('text')}: expected a non-empty string, got {text!r}")
    query = _span(obj["query"], text, where("query"), optional_missing=False)
    if obj["query"] and isinstance(obj["query"], str):
        hits = [m.start() for m in re.finditer(r"(?<!\w)" + re.escape(obj["query"]) + r"(?!\w)", text, re.IGNORECASE)]
        if len(hits) > 1:
            raise _Bad(
                f"{where('query')}: {obj['query']!r} occurs {len(hits)} times (at {hits}); say which with "
                f'{{"text": {json.dumps(obj["query"])}, "start": {hits[-1]}}}'
            )
    cands = obj["candidates"]
    if not isinstance(cands, list) or len(cands) < 2:
        raise _Bad(f"{where('candidates')}: expected a list of at least 2 candidates, got {json.dumps(cands)[:60]}")
    spans = [_span(c, text, where(f"candidates[{i}]"), optional_missing=True) for i, c in enumerate(cands)]
    answer = obj["answer"]
    names = [c if isinstance(c, str) else c.get("text") for c in cands]
    if isinstance(answer, str):
        low = [str(x).lower() for x in names]
        if answer.lower() not in low:
            raise _Bad(f"{where('answer')}: {answer!r} is not one of the candidates {names}; give its text or index")
        answer = low.index(answer.lower())
    if not isinstance(answer, int) or isinstance(answer, bool) or not 0 <= answer < len(cands):
        raise _Bad(
            f"{where('answer')}: expected a candidate index 0..{len(cands) - 1} or a candidate's text, got {answer!r}"
        )
    pair = obj.get("pair")
    if pair is not None and not isinstance(pair, (str, int)):
        raise _Bad(f"{where('pair')}: expected a string or integer pair id, got {pair!r}")
    missing = [names[i] for i, s in enumerate(spans) if s is None]
    if missing:
        return Skipped(ident, n, f"candidate {missing[0]!r} does not occur in the text")
    return Item(ident, text, query, tuple(spans), answer, None if pair is None else str(pair), n)


def parse_jsonl(text: str, source: str = "<jsonl>") -> Dataset:
    """Items from qkv's JSONL schema (see the module docstring)."""
    data = Dataset([], [], source)
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(
                f"{source}:{n}: not valid JSON ({e.msg} at column {e.colno}); each line must be one JSON object"
            ) from None
        try:
            got = _item(obj, n, source)
        except _Bad as e:
            raise ValueError(str(e)) from None
        (data.skipped if isinstance(got, Skipped) else data.items).append(got)
    if not data.total:
        raise ValueError(f"{source}: no items; each line must be a JSON object with text, query, candidates, answer")
    return data


def parse_items(objs, source: str = "items") -> Dataset:
    """Items from already-parsed JSON objects in qkv's schema (a list, as ``POST /api/probe`` receives them).

    The same checks and wording as :func:`parse_jsonl`, with an item named ``items[i]`` instead of
    ``file:line``; ``Item.line`` and ``Skipped.line`` are the index ``i``, the default id is ``item i``.

    Example:
        >>> d = parse_items([{"text": "The cat sat on the mat because it was tired.", "query": "it",
        ...                   "candidates": ["cat", "mat"], "answer": "cat"}])
        >>> d.items[0].id, d.items[0].query, d.items[0].answer
        ('item 0', Span(text='it', start=31, end=33), 0)
        >>> parse_items([{"text": "The cat sat.", "query": {"text": "it", "start": 40}, "candidates": ["cat", "sat"],
        ...               "answer": 0}])
        Traceback (most recent call last):
        ValueError: items[0]: field 'query': span 'it' at 40..42 is out of range; the text has 12 characters
    """
    if not isinstance(objs, (list, tuple)):
        raise ValueError(f"{source}: expected a list of item objects, got {type(objs).__name__}")
    data = Dataset([], [], source)
    for i, obj in enumerate(objs):
        try:
            got = _item(obj, i, source, loc=f"{source}[{i}]", unit="item")
        except _Bad as e:
            raise ValueError(str(e)) from None
        (data.skipped if isinstance(got, Skipped) else data.items).append(got)
    if not data.total:
        raise ValueError(f"{source}: no items; give at least one object with text, query, candidates, answer")
    return data


def _flat(el) -> str:
    return " ".join("".join(el.itertext()).split()) if el is not None else ""


def _norm_answer(a: str) -> str:
    a = " ".join(a.lower().split()).rstrip(".")
    return a[4:] if a.startswith("the ") else a


def parse_wsc_xml(text: str, source: str = "<xml>") -> Dataset:
    """Items from ``WSCollection.xml`` (see the module docstring); ids are ``wsc-1``, ``wsc-2``, ..."""

    try:
        root = ET.fromstring(re.sub(r"<!DOCTYPE[^>]*>", "", text, count=1))
    except ET.ParseError as e:
        line, col = e.position
        raise ValueError(
            f"{source}:{line}: malformed XML at column {col} ({e.msg}); expected WSCollection.xml's "
            "<collection><schema>...</schema></collection>"
        ) from None
    schemas = root.findall("schema") if root.tag != "schema" else [root]
    if not schemas:
        raise ValueError(f"{source}: no <schema> elements under <{root.tag}>; expected WSCollection.xml's format")
    lines = [m.start() for m in re.finditer(r"<schema[\s>]", text)]
    data, prev, pair = Dataset([], [], source), None, 0
    for s, el in enumerate(schemas):
        n = text.count("\n", 0, lines[s]) + 1 if s < len(lines) else None
        ident = f"wsc-{s + 1}"
        where = f"{source}:{n}: schema {s + 1}"
        t = el.find("text")
        parts = [_flat(t.find(k)) if t is not None else "" for k in ("txt1", "pron", "txt2")]
        if t is None or not parts[1]:
            raise ValueError(f"{where}: missing field 'text/pron'; expected <text><txt1/><pron/><txt2/></text>")
        answers = [_flat(a) for a in el.findall("answers/answer")]
        if len(answers) < 2 or not all(answers):
            raise ValueError(f"{where}: field 'answers' needs at least 2 non-empty <answer>, got {answers}")
        letter = _flat(el.find("correctAnswer")).strip().rstrip(".").strip().upper()
        if len(letter) != 1 or not 0 <= ord(letter) - ord("A") < len(answers):
            raise ValueError(
                f"{where}: field 'correctAnswer' must be a letter A..{chr(ord('A') + len(answers) - 1)}, got {letter!r}"
            )
        key = tuple(sorted(_norm_answer(a) for a in answers))
        pair += key != prev
        prev = key
        txt1, pron, txt2 = parts
        start = len(txt1) + 1 if txt1 else 0
        sep = "" if not txt2 or re.match(r"[.,;:!?']", txt2) else " "
        sentence = (f"{txt1} " if txt1 else "") + pron + sep + txt2
        query = Span(pron, start, start + len(pron))
        spans, missing = [], None
        for a in answers:
            word, at = a, find_word(sentence, a, before=query.start)
            if at is None:
                word = head_word(Span(a, 0, len(a))).text
                at = find_word(sentence, word, before=query.start)
            if at is None:
                missing = missing or (a, word)
                continue
            spans.append(Span(sentence[at : at + len(word)], at, at + len(word)))
        if missing is not None:
            data.skipped.append(
                Skipped(ident, n, f"candidate {missing[0]!r} (head word {missing[1]!r}) does not occur in the text")
            )
            continue
        data.items.append(Item(ident, sentence, query, tuple(spans), ord(letter) - ord("A"), f"wsc-pair-{pair}", n))
    return data


def read_items(path: str | Path) -> Dataset:
    """Items from a ``.jsonl`` file (qkv's schema) or a ``.xml`` file (WSC); the format is told by content."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {str(path)!r}; give a .jsonl (qkv's probe schema) or WSCollection.xml")
    raw = path.read_text(encoding="utf-8")
    if raw.lstrip().startswith("<"):
        return parse_wsc_xml(raw, str(path))
    return parse_jsonl(raw, str(path))


def twins_path() -> Path:
    """The shipped twin pairs (CC0): ``qkv/lens/data/twins.jsonl``."""
    return Path(__file__).with_name("data") / "twins.jsonl"


def load_twins() -> Dataset:
    """The shipped twin pairs as a :class:`Dataset` (see ``qkv/lens/data/README.md``)."""
    return read_items(twins_path())
