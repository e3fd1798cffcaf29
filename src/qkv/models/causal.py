"""The decoder skeleton GPT-2 and Llama share: causal masking, the KV cache, positions, and greedy
``generate``.

A family supplies ``embed(input_ids, positions)``, ``layers`` (each ``layer(h, mask, cache, positions)``),
``norm`` (final norm) and ``lm_head``. Decoding with the cache feeds only the new tokens; the causal
mask is aligned bottom-right, so the new queries (the last positions) see every cached key::

    prompt of 3, then 1 new token:    k 0 1 2 3
                                    q3  ■ ■ ■ ■

Shape legend: ``B`` batch, ``L`` new tokens, ``Lk`` all keys (cached + new), ``V`` vocabulary.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .. import masks
from ..nn.cache import KVCache
from .common import CausalLMOutput, check_input_ids, key_mask, record_point
from .config import ModelConfig

__all__ = ["CausalLM", "positions_from_mask"]


def positions_from_mask(attention_mask: Tensor) -> Tensor:
    """Token positions ``(B, L)`` that skip left padding: ``cumsum(mask) - 1`` (0 on padding)."""
    pos = attention_mask.long().cumsum(-1) - 1
    return pos.masked_fill(attention_mask == 0, 0)


class CausalLM(nn.Module):
    """Base of the causal LM families; ``model(input_ids)`` -> :class:`CausalLMOutput`.

    Recorded points (besides each attention's steps): ``embeddings``, ``layers.{i}.input``,
    ``layers.{i}.output``, ``final`` (after the final norm).
    """

    tied_parameters: tuple[str, ...] = ()
    # set by each family's __init__
    config: ModelConfig
    layers: nn.ModuleList
    norm: nn.Module
    lm_head: nn.Module

    def embed(self, input_ids: Tensor, positions: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} must implement embed()")

    def new_cache(self) -> list[KVCache]:
        """One empty :class:`KVCache` per layer."""
        return [KVCache() for _ in self.layers]

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        *,
        positions: Tensor | None = None,
        cache: list[KVCache] | None = None,
        output_hidden_states: bool = False,
        last_logits_only: bool = False,
    ) -> CausalLMOutput:
        """Next-token logits for ``input_ids`` ``(B, L)``.

        Args:
            input_ids: the new tokens (all tokens without a cache).
            attention_mask: ``(B, Lk)`` 1 = token, 0 = padding, over cached + new tokens.
            positions: ``(L,)`` or ``(B, L)`` positions of the new tokens (default: after the cache).
            cache: from :meth:`new_cache`; the new keys/values are appended to it.
            output_hidden_states: also return every layer's output.
            last_logits_only: logits ``(B, 1, V)`` of the last position only (what greedy decoding reads;
                a 4,096-token prompt otherwise spends ~100 GFLOP on the vocabulary projection).
        """
        if cache is not None and len(cache) != len(self.layers):
            raise ValueError(
                f"cache has {len(cache)} entries but the model has {len(self.layers)} layers; use model.new_cache()"
            )
        past = 0 if cache is None else len(cache[0])
        check_input_ids(input_ids, attention_mask, self.config, past)
        L = input_ids.shape[1]
        if positions is None:
            positions = torch.arange(past, past + L, device=input_ids.device)  # (L,)
        elif positions.shape[-1] != L:
            raise ValueError(
                f"positions must have {L} entries per row (one per new token), got shape {tuple(positions.shape)}"
            )
        mask = self._mask(attention_mask, L)
        h = self.embed(input_ids, positions)  # (B, L, hidden)
        h = record_point("embeddings", h)
        hidden = [h]
        for i, layer in enumerate(self.layers):
            h = record_point(f"layers.{i}.input", h)
            h = layer(h, mask, None if cache is None else cache[i], positions)
            h = record_point(f"layers.{i}.output", h)
            hidden.append(h)
        h = self.norm(h)
        h = record_point("final", h)
        return CausalLMOutput(
            logits=self.lm_head(h[:, -1:] if last_logits_only else h),
            last_hidden_state=h,
            hidden_states=tuple(hidden) if output_hidden_states else None,
        )

    @staticmethod
    def _mask(attention_mask: Tensor | None, L: int) -> masks.Mask | None:
        km = key_mask(attention_mask)  # padding mask, bool (B, 1, 1, Lk) or None
        if km is None:
            return None if L == 1 else masks.causal(align="bottom_right")
        padding = masks.as_mask(km)  # a Mask on both sides: torch.compile traces Mask & Mask, not Mask & Tensor
        assert padding is not None  # km is a bool tensor here
        return masks.causal(align="bottom_right") & padding

    @torch.no_grad()
    def generate(
        self,
        input_ids: Tensor,
        max_new_tokens: int,
        *,
        attention_mask: Tensor | None = None,
        eos_token_id: int | None = None,
        pad_token_id: int | None = None,
    ) -> Tensor:
        """Greedy decoding with the KV cache: ``(B, L)`` -> ``(B, L + max_new_tokens)``.

        The prompt runs once; then each step feeds one token per row and attends over the cache.
        Left-padded batches (``attention_mask`` with zeros on the left) get positions that skip
        the padding. With ``eos_token_id``, rows that produced it continue with ``pad_token_id``
        (default: ``eos_token_id``); the shape is always ``L + max_new_tokens``.
        """
        if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
        check_input_ids(input_ids, attention_mask, self.config)
        B, L = input_ids.shape
        if L + max_new_tokens > self.config.max_positions:
            raise ValueError(
                f"{L} prompt tokens + {max_new_tokens} new exceed the model's "
                f"{self.config.max_positions} positions; shorten the prompt or ask for fewer tokens"
            )
        if max_new_tokens == 0:
            return input_ids.clone()
        am = torch.ones_like(input_ids) if attention_mask is None else attention_mask.long()
        pos = positions_from_mask(am)  # (B, L)
        cache = self.new_cache()
        out = self(input_ids, am, positions=pos, cache=cache, last_logits_only=True)
        finished = torch.zeros(B, dtype=torch.bool, device=input_ids.device)
        tokens = [input_ids]
        for step in range(max_new_tokens):
            nxt = out.logits[:, -1].argmax(-1)  # (B,)
            if eos_token_id is not None:
                pad = eos_token_id if pad_token_id is None else pad_token_id
                nxt = torch.where(finished, torch.full_like(nxt, pad), nxt)
                finished |= nxt == eos_token_id
            tokens.append(nxt[:, None])
            if step == max_new_tokens - 1:
                break
            am = torch.cat([am, am.new_ones(B, 1)], dim=1)  # (B, Lk + 1)
            pos = pos[:, -1:] + 1  # (B, 1)
            out = self(nxt[:, None], am, positions=pos, cache=cache)
        return torch.cat(tokens, dim=1)
