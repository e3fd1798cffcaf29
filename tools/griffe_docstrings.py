"""Griffe extension for the API pages: read qkv's docstrings as their authors wrote them.

qkv's docstrings are Google style with a few reST habits that the doctests and ``help()`` read fine:

* ``Example:`` (singular) heads a doctest section; griffe's Google parser knows only ``Examples:``, so the
  doctest would render as a paragraph. It is renamed ``Examples:``.
* ``text::`` before an indented block (reST's literal block): the block is already a markdown code block;
  the doubled colon is reduced to one.
"""

from __future__ import annotations

import re

from griffe import Extension

EXAMPLE = re.compile(r"^(\s*)Example:[ \t]*$", re.M)
LITERAL = re.compile(r"(\S)::[ \t]*$", re.M)


class QkvDocstrings(Extension):
    """Normalises every docstring of the loaded package (see the module docstring)."""

    def on_instance(self, *, obj, **kwargs) -> None:
        if obj.docstring is not None:
            value = EXAMPLE.sub(r"\1Examples:", obj.docstring.value)
            obj.docstring.value = LITERAL.sub(r"\1:", value)
