"""Draft proposers for speculative decoding.

Two drafters: prompt lookup (:class:`NgramProposer`: find the latest earlier occurrence of the
last few tokens and propose what followed it; free, and good when the answer quotes its input)
and a *self-speculative* draft model (the target's own first ``draft_layers`` layers plus its
final norm and head, which shares the tokenizer and even the KV cache of those layers; run by
:class:`~genai_factory.serving.torch_engine.core.EngineCore`).

Example:
    >>> from genai_factory.serving.torch_engine.speculative import NgramProposer
    >>> NgramProposer(num_tokens=3).propose([5, 6, 7, 8, 9, 5, 6], limit=3)
    [7, 8, 9]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from genai_factory.shared.errors import ConfigError

__all__ = ["NgramProposer", "SpeculativeConfig"]


@dataclass(frozen=True, slots=True)
class SpeculativeConfig:
    """Speculative decoding settings.

    Args:
        method: ``ngram`` (prompt lookup) or ``draft`` (the first ``draft_layers`` layers).
        num_tokens: draft tokens proposed per step.
        max_ngram: longest suffix matched by prompt lookup.
        min_ngram: shortest suffix matched by prompt lookup.
        draft_layers: layers of the self-speculative draft model.
    """

    method: Literal["ngram", "draft"] = "ngram"
    num_tokens: int = 4
    max_ngram: int = 3
    min_ngram: int = 1
    draft_layers: int = 8

    def __post_init__(self) -> None:
        if self.method not in ("ngram", "draft"):
            raise ConfigError(
                f"speculative method must be 'ngram' or 'draft', not {self.method!r}",
                param="speculative",
            )
        if self.num_tokens < 1:
            raise ConfigError("num_speculative_tokens must be at least 1", param="speculative")
        if not 1 <= self.min_ngram <= self.max_ngram:
            raise ConfigError("need 1 <= min_ngram <= max_ngram", param="speculative")
        if self.draft_layers < 1:
            raise ConfigError("draft_layers must be at least 1", param="speculative")


class NgramProposer:
    """Prompt-lookup drafting: continue the latest earlier match of the context's last n-gram.

    Args:
        num_tokens: tokens proposed at most.
        max_ngram: try suffixes of this many tokens first...
        min_ngram: ...down to this many.
    """

    def __init__(self, num_tokens: int = 4, max_ngram: int = 3, min_ngram: int = 1) -> None:
        self.num_tokens = num_tokens
        self.max_ngram = max_ngram
        self.min_ngram = min_ngram

    def propose(self, tokens: Sequence[int], limit: int | None = None) -> list[int]:
        """Up to ``min(limit, num_tokens)`` draft tokens; empty when nothing matches."""
        wanted = self.num_tokens if limit is None else min(limit, self.num_tokens)
        count = len(tokens)
        if wanted <= 0:
            return []
        for size in range(min(self.max_ngram, count - 1), self.min_ngram - 1, -1):
            pattern = list(tokens[count - size :])
            last = pattern[-1]
            # the latest start whose n-gram ends before the suffix itself
            for start in range(count - size - 1, -1, -1):
                if tokens[start + size - 1] == last and list(tokens[start : start + size]) == (
                    pattern
                ):
                    follow = list(tokens[start + size : start + size + wanted])
                    if follow:
                        return follow
        return []
