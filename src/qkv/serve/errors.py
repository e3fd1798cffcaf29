"""Turning what FastAPI/pydantic reject into one clear sentence: what was expected, what arrived, how to fix it.

Example:
    >>> message([{"type": "string_type", "loc": ("body", "text"), "msg": "Input should be a valid string",
    ...           "input": 5}], "POST /api/trace")
    (422, 'field "text": expected a string, got 5 (int); send e.g. {"text": "The cat sat on the mat.", "query": "cat"}')
"""

from __future__ import annotations

import json
from typing import Any, Sequence

__all__ = ["message", "EXAMPLES"]

EXAMPLES = {
    "POST /api/trace": '{"text": "The cat sat on the mat.", "query": "cat"}',
    "POST /api/compare": '{"text_a": "... because it was tired.", "text_b": "... because it was soft.", '
    '"query": "it", "prefer": "cat", "over": "mat"}',
    "POST /api/probe": '{"items": [{"text": "The cat sat on the mat because it was tired.", "query": "it", '
    '"candidates": ["cat", "mat"], "answer": "cat"}, ...]}',
    "POST /api/intervene": '{"text": "The cat sat on the mat because it was tired.", "query": "it", '
    '"prefer": "cat", "over": "mat", "interventions": [{"kind": "ablate", "layer": 3, "head": 1}]}',
}

_EXPECTED = {
    "string_type": "a string",
    "int_type": "an integer",
    "bool_type": "true or false",
    "list_type": "an array",
    "literal_error": None,
    "missing": None,
    "extra_forbidden": None,
    "model_attributes_type": "a JSON object",
    "dict_type": "a JSON object",
}


def _shown(value: Any) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    kind = {
        str: "string",
        int: "int",
        float: "float",
        bool: "bool",
        list: "array",
        dict: "object",
        type(None): "null",
    }.get(type(value), type(value).__name__)
    return f"{text} ({kind})"


#: Tags of tagged unions (an intervention's "kind"): pydantic puts the tag in an error's location after the index.
UNION_TAGS = ("ablate", "knockout", "swap", "patch")


def _field(err: dict) -> str:
    # a union (str | int) reports one error per branch, located at field.str / field.int: name the field once;
    # list items read as items[0], a tagged union's tag after an index is left out (interventions[0].layer)
    out, prev = "", None
    for p in err.get("loc", ()):
        if p in ("body", "str", "int") or (isinstance(prev, int) and p in UNION_TAGS):
            prev = p
            continue
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
        prev = p
    return out


def _expected(err: dict) -> str:
    kind = err.get("type", "")
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        tags = err.get("ctx", {}).get("expected_tags") or ", ".join(repr(t) for t in UNION_TAGS)
        return f"an object whose {err.get('ctx', {}).get('discriminator', 'kind')} is one of {tags}"
    if kind in ("too_short", "too_long"):
        ctx = err.get("ctx", {})
        n = ctx.get("min_length") if kind == "too_short" else ctx.get("max_length")
        return f"{'at least' if kind == 'too_short' else 'at most'} {n} item{'s' if n != 1 else ''}"
    if kind == "literal_error":
        return err.get("ctx", {}).get("expected", "one of the allowed values")
    return _EXPECTED.get(kind) or err.get("msg", "a valid value").replace("Input should be ", "")


def message(errors: Sequence[dict], endpoint: str, content_type: str | None = "application/json") -> tuple[int, str]:
    """``(status, one sentence)`` for pydantic/FastAPI validation ``errors`` of a request to ``endpoint``.

    Malformed JSON is 400; a body that is not JSON (another ``content_type``), or JSON of the wrong shape or
    types, is 422.
    """
    example = EXAMPLES.get(endpoint, "{...}")
    if any(isinstance(err.get("input"), (bytes, bytearray)) for err in errors):
        return 422, (
            f"the body was sent as Content-Type: {content_type or 'none'}; send JSON with "
            f"Content-Type: application/json, e.g. {example}"
        )
    for err in errors:
        if err.get("type") == "json_invalid":
            why = err.get("ctx", {}).get("error", "invalid JSON")
            return 400, (
                f"malformed JSON in the request body ({why}); send a JSON object with "
                f"Content-Type: application/json, e.g. {example}"
            )
    parts: dict[str, str] = {}
    wanted: dict[str, list[str]] = {}
    for err in errors:
        field, kind = _field(err), err.get("type", "")
        if kind == "missing" and not field:
            return 422, f"the request body is empty; send a JSON object, e.g. {example}"
        if kind == "missing":
            parts.setdefault(f"missing:{field}", f'missing field "{field}"')
        elif kind == "extra_forbidden":
            parts.setdefault(f"extra:{field}", f'unknown field "{field}"')
        else:
            wanted.setdefault(field, [])
            if _expected(err) not in wanted[field]:
                wanted[field].append(_expected(err))
            where = f'field "{field}"' if field else "the body"
            parts[f"type:{field}"] = f"{where}: expected {' or '.join(wanted[field])}, got {_shown(err.get('input'))}"
    return 422, "; ".join(list(parts.values())[:4]) + f"; send e.g. {example}"
