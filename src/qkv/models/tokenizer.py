"""Tokenizer: ``tokenizer.json`` read by the ``tokenizers`` library, with character offsets, explicit
truncation and padded batches.

Example:
    >>> import qkv.models
    >>> tok = qkv.models.load("minilm").tokenizer
    >>> enc = tok.encode("The cat sat.")
    >>> enc.tokens, enc.offsets[1], enc.special[0]
    (['[CLS]', 'the', 'cat', 'sat', '.', '[SEP]'], (0, 3), True)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

__all__ = ["Tokenizer", "Encoding"]


@dataclass
class Encoding:
    """One tokenised text.

    Attributes:
        ids: token ids.
        tokens: token strings.
        offsets: ``(start, end)`` character offsets of each token in the text; ``(0, 0)`` for
            special tokens.
        special: whether each token is a special token (``[CLS]``, ``[SEP]``, ``<s>``...).
    """

    ids: list[int]
    tokens: list[str]
    offsets: list[tuple[int, int]]
    special: list[bool]

    def __len__(self) -> int:
        return len(self.ids)


def _check_encodable(text: str) -> None:
    """Lone surrogates (undecodable bytes kept by ``surrogateescape``, e.g. from ``sys.argv``) cannot be
    tokenised: a ValueError that shows them and says how to decode the input."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        bad = text[e.start : e.end]
        raw = bytes(ord(c) - 0xDC00 for c in bad if 0xDC80 <= ord(c) <= 0xDCFF)
        what = f"undecodable byte(s) {raw!r}" if raw else f"lone surrogate(s) {bad!r}"
        context = text[max(0, e.start - 10) : e.end + 10]
        raise ValueError(
            f"the text contains {what} at character {e.start} ({context!r}), which is not valid "
            "Unicode; decode the input with its real encoding (e.g. bytes.decode('latin-1')) or "
            "replace the bad bytes (bytes.decode('utf-8', 'replace'))"
        ) from None


class Tokenizer:
    """Wraps ``tokenizers.Tokenizer.from_file(path)``.

    Args:
        path: a ``tokenizer.json``.
        max_positions: the model's limit; longer encodings raise unless ``truncate=True``.
        pad_token_id: id used to pad batches (default: the tokenizer's own padding id, ``[PAD]``,
            ``<pad>``, else 0).
    """

    def __init__(self, path: str | Path, max_positions: int, pad_token_id: int | None = None):
        from tokenizers import Tokenizer as _HFTokenizer

        self.path = Path(path)
        try:
            text = self.path.read_text(encoding="utf-8")
            json.loads(text)
            self._tok = _HFTokenizer.from_str(text)
        except Exception as e:  # the library's and json's errors -> one clear message
            raise ValueError(
                f"cannot read tokenizer {self.path}: {e}; replace it with the model's original "
                "tokenizer.json (or remove it to load the model without a tokenizer)"
            ) from None
        self._tok.no_truncation()
        self._tok.no_padding()
        self._truncating = _HFTokenizer.from_str(self._tok.to_str())
        self._truncating.enable_truncation(max_positions)
        self.max_positions = int(max_positions)
        self.pad_token_id = self._find_pad_id(text, pad_token_id)

    def _find_pad_id(self, text: str, given: int | None) -> int:
        padding = json.loads(text).get("padding") or {}
        if given is not None:
            return int(given)
        if padding.get("pad_id") is not None:
            return int(padding["pad_id"])
        for tok in ("[PAD]", "<pad>", "<|padding|>"):
            i = self._tok.token_to_id(tok)
            if i is not None:
                return i
        return 0

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, *, truncate: bool = False) -> Encoding:
        """Tokenise ``text`` (special tokens included as the model expects).

        Raises:
            ValueError: the encoding is longer than ``max_positions`` and ``truncate`` is False.
        """
        if not isinstance(text, str):
            raise ValueError(f"encode expects a str, got {type(text).__name__}; for many texts use encode_batch")
        _check_encodable(text)
        enc = self._tok.encode(text)
        if len(enc.ids) > self.max_positions:
            if not truncate:
                raise ValueError(
                    f"text is {len(enc.ids)} tokens long but the model accepts at most "
                    f"{self.max_positions} positions; pass truncate=True to keep the first "
                    f"{self.max_positions} tokens, or split the text"
                )
            enc = self._truncating.encode(text)
        special = [bool(s) for s in enc.special_tokens_mask]
        offsets = [(0, 0) if s else (int(a), int(b)) for (a, b), s in zip(enc.offsets, special)]
        return Encoding(ids=list(enc.ids), tokens=list(enc.tokens), offsets=offsets, special=special)

    def encode_batch(self, texts: list[str], *, truncate: bool = False) -> tuple[Tensor, Tensor]:
        """Tokenise and right-pad ``texts``.

        Returns:
            ``input_ids`` LongTensor ``(B, L)`` and ``attention_mask`` LongTensor ``(B, L)``
            (1 = token, 0 = padding), ``L`` the longest encoding.
        """
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts) or not len(texts):
            raise ValueError(
                "encode_batch expects a non-empty list of str, got "
                f"{type(texts).__name__}; for one text use encode(text) or encode_batch([text])"
            )
        encs = [self.encode(t, truncate=truncate) for t in texts]
        L = max(len(e) for e in encs)
        ids = torch.full((len(encs), L), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(encs), L), dtype=torch.long)
        for i, e in enumerate(encs):
            ids[i, : len(e)] = torch.tensor(e.ids, dtype=torch.long)
            mask[i, : len(e)] = 1
        return ids, mask

    def decode(self, ids: Sequence[int] | Tensor, *, skip_special_tokens: bool = False) -> str:
        """Token ids (list or 1-D tensor) back to text."""
        if isinstance(ids, Tensor):
            if ids.dim() != 1:
                raise ValueError(f"decode expects one sequence (L,), got shape {tuple(ids.shape)}; decode each row")
            ids = ids.tolist()
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token(self, i: int) -> str:
        """The string of token id ``i``."""
        s = self._tok.id_to_token(int(i))
        if s is None:
            raise ValueError(
                f"token id {i} is not in the vocabulary (ids 0..{self.vocab_size - 1}); use an id below that"
            )
        return s

    def __repr__(self) -> str:
        return f"Tokenizer({str(self.path)!r}, vocab={self.vocab_size}, max_positions={self.max_positions})"
