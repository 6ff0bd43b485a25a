"""Draft proposers for speculative decoding.

Two drafters: prompt lookup (:class:`NgramProposer`: find the latest earlier occurrence of the
last few tokens and propose what followed it; free, and good when the answer quotes its input)
and a *self-speculative* draft model (the target's own first ``draft_layers`` layers plus its
final norm and head, which shares the tokenizer and even the KV cache of those layers; run by
:class:`~genai_factory.serving.torch_engine.core.EngineCore`).

With ``adaptive=True`` each request gets a :class:`DraftLength` controller: it estimates how
often that request's draft tokens are accepted and picks the draft length that maximises the
expected tokens per unit of work (a draft token costs ``draft_cost`` of a target step, a verified
one ``verify_cost``). When no length pays, it stops drafting and only probes one token now and
then, at exponentially growing intervals, so a drafter that does not fit the text costs little
more than plain decoding. ``max_batch_size`` turns speculation off while more requests run (at
high load the extra verification tokens compete with other requests' tokens for compute).

Example:
    >>> from genai_factory.serving.torch_engine.speculative import NgramProposer, best_draft_length
    >>> NgramProposer(num_tokens=3).propose([5, 6, 7, 8, 9, 5, 6], limit=3)
    [7, 8, 9]
    >>> best_draft_length(acceptance=0.9, cost_per_token=0.1, max_tokens=4)
    4
    >>> best_draft_length(acceptance=0.3, cost_per_token=0.87, max_tokens=4)
    0
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from genai_factory.shared.errors import ConfigError

__all__ = ["DraftLength", "NgramProposer", "SpeculativeConfig", "best_draft_length"]

MAX_BACKOFF_STEPS = 32
"""Longest run of steps without drafting between two probes once drafting stopped paying."""


@dataclass(frozen=True, slots=True)
class SpeculativeConfig:
    """Speculative decoding settings.

    Args:
        method: ``ngram`` (prompt lookup) or ``draft`` (the first ``draft_layers`` layers).
        num_tokens: draft tokens proposed per step.
        max_ngram: longest suffix matched by prompt lookup.
        min_ngram: shortest suffix matched by prompt lookup.
        draft_layers: layers of the self-speculative draft model.
        adaptive: per request, draft only as many tokens as pay (see :class:`DraftLength`).
        verify_cost: the work of verifying one draft token, as a fraction of a decode step.
        max_batch_size: draft only while at most this many requests run (``None``: always).
    """

    method: Literal["ngram", "draft"] = "ngram"
    num_tokens: int = 4
    max_ngram: int = 3
    min_ngram: int = 1
    draft_layers: int = 8
    adaptive: bool = False
    verify_cost: float = 0.1
    max_batch_size: int | None = None

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
        if not 0.0 <= self.verify_cost < 1.0:
            raise ConfigError("verify_cost must be in [0, 1)", param="speculative")
        if self.max_batch_size is not None and self.max_batch_size < 1:
            raise ConfigError("speculative max_batch_size must be at least 1", param="speculative")

    def draft_cost(self, num_layers: int) -> float:
        """One draft token's work as a fraction of a target step (prompt lookup is free)."""
        return self.draft_layers / num_layers if self.method == "draft" else 0.0


def best_draft_length(acceptance: float, cost_per_token: float, max_tokens: int) -> int:
    """The draft length ``k`` in ``0..max_tokens`` with the most expected tokens per unit of work.

    With per-token acceptance ``a``, a step that verifies ``k`` draft tokens yields
    ``1 + a + ... + a**k`` tokens on average and costs ``1 + k * cost_per_token`` decode steps.
    Ties go to the shorter draft.
    """
    best, best_rate = 0, 1.0
    expected, term = 1.0, 1.0
    for k in range(1, max_tokens + 1):
        term *= acceptance
        expected += term
        rate = expected / (1.0 + k * cost_per_token)
        if rate > best_rate + 1e-12:
            best, best_rate = k, rate
    return best


class DraftLength:
    """One request's adaptive draft length, from a decaying estimate of its acceptance rate.

    Args:
        max_tokens: the longest draft.
        cost_per_token: a draft token's cost (drafting plus verifying) relative to a decode step.
        prior: the acceptance rate assumed before any draft was verified.
        decay: weight of the past in the estimate (per verified draft).

    Example:
        >>> control = DraftLength(max_tokens=4, cost_per_token=0.9)
        >>> [control.next_length(4) for _ in range(4)]  # does not pay: off, with rare probes
        [0, 1, 0, 0]
        >>> control = DraftLength(max_tokens=4, cost_per_token=0.1)
        >>> control.next_length(4)
        2
        >>> control.update(drafted=2, accepted=2)
        >>> control.next_length(4)
        4
        >>> for _ in range(8):
        ...     control.update(drafted=4, accepted=0)
        >>> control.next_length(4)
        0
    """

    def __init__(
        self, max_tokens: int, cost_per_token: float, prior: float = 0.5, decay: float = 0.7
    ) -> None:
        self.max_tokens = max_tokens
        self.cost_per_token = cost_per_token
        self.decay = decay
        # pseudo-counts: two trials at the prior rate, so one verification moves it a lot
        self.accepted = 2.0 * prior
        self.trials = 2.0
        self.idle = 0
        self.backoff = 1

    @property
    def acceptance(self) -> float:
        return self.accepted / self.trials

    def next_length(self, limit: int) -> int:
        """Draft tokens to propose this step (at most ``limit``); may be a 1-token probe."""
        best = best_draft_length(self.acceptance, self.cost_per_token, self.max_tokens)
        if best > 0 or limit <= 0:
            return min(best, max(limit, 0))
        if self.idle < self.backoff:
            self.idle += 1
            return 0
        # a probe: without it the estimate would never recover when the text starts to repeat
        self.idle = 0
        self.backoff = min(2 * self.backoff, MAX_BACKOFF_STEPS)
        return 1

    def update(self, drafted: int, accepted: int) -> None:
        """Record a verified draft: ``accepted`` of its ``drafted`` tokens were kept."""
        if drafted <= 0:
            return
        # tokens accepted in a row, plus the one rejected (a geometric trial each)
        trials = accepted + (1 if accepted < drafted else 0)
        self.accepted = self.decay * self.accepted + accepted
        self.trials = self.decay * self.trials + trials
        if best_draft_length(self.acceptance, self.cost_per_token, self.max_tokens) > 0:
            self.backoff = 1
            self.idle = 0


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
