"""Engines read masks and mods only through their public description: no engine names a private class of
:mod:`qkv.core.masks`, :mod:`qkv.core.mask_base` or :mod:`qkv.core.mods` (checked on the source)."""

import ast
from pathlib import Path

import qkv.core

ENGINES = Path(qkv.core.__file__).parent / "engines"
DESCRIBED = {"masks", "mods", "mask_base", "_masks", "_mods"}


def _private_uses(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            if isinstance(node.value, ast.Name) and node.value.id in DESCRIBED:
                found.append(f"{path.name}:{node.lineno} {node.value.id}.{node.attr}")
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[-1] in DESCRIBED:
            found += [f"{path.name}:{node.lineno} import {a.name}" for a in node.names if a.name.startswith("_")]
    return found


def test_no_engine_uses_a_private_mask_or_mod_class():
    files = sorted(ENGINES.rglob("*.py"))
    assert len(files) >= 7
    uses = [u for f in files for u in _private_uses(f)]
    assert uses == []


def test_the_checker_catches_a_private_use(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from ..masks import _Padding\nx = isinstance(m, _masks._Full)\n")
    assert len(_private_uses(bad)) == 2
