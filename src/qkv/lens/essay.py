"""The essay's example as constants: one sentence, its pronoun and the pair it is asked about.

The seed essay's example is "The cat sat on the mat because it was tired.": the query "it" should match
"The cat" more than "the mat". Every part of qkv that opens on that sentence (``qkv explain`` and its HTML
page, ``qkv serve``, ``qkv claims``, the README) takes it from here, and :meth:`qkv.lens.trace.Trace.resolve`
uses :data:`ESSAY_PAIR` as the default ``prefer``/``over`` when the query resolves to its pronoun.
"""

from __future__ import annotations

__all__ = ["ESSAY_SENTENCE", "ESSAY_QUERY", "ESSAY_PAIR", "PRONOUNS"]

#: The essay's sentence.
ESSAY_SENTENCE = "The cat sat on the mat because it was tired."
#: Its pronoun: the query shown first.
ESSAY_QUERY = "it"
#: ``(prefer, over)``: the referent the essay expects and the other candidate.
ESSAY_PAIR = ("cat", "mat")
#: Words the default query rule looks for first (the essay is about what a pronoun attends to).
PRONOUNS = frozenset("it he she they him her them its his hers their theirs itself himself herself themselves".split())
