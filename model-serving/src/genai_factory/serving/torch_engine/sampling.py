"""Sampling parameters, token selection and the speculative accept/reject rule.

Greedy when ``temperature == 0``; otherwise temperature, then top-k and top-p (nucleus) filtering,
then a draw from a per-request seeded generator, so a request with a seed repeats exactly.

Example:
    >>> import torch
    >>> from genai_factory.serving.torch_engine.sampling import SamplingParams, choose_token
    >>> logits = torch.tensor([0.1, 3.0, 0.2])
    >>> choose_token(logits, SamplingParams(temperature=0.0), torch.Generator())
    1
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from genai_factory.shared.errors import ValidationError

__all__ = [
    "SamplingParams",
    "TokenLogprob",
    "choose_token",
    "logprobs_of",
    "target_probs",
    "verify_draft",
]


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """How to pick each next token and when to stop.

    Args:
        temperature: 0 for greedy; higher flattens the distribution.
        top_p: keep the smallest set of tokens whose probability reaches ``top_p``.
        top_k: keep the ``top_k`` most likely tokens (0: all).
        max_tokens: stop after this many generated tokens (``finish_reason="length"``).
        seed: seeds this request's generator; ``None`` takes the engine's seed.
        stop_token_ids: extra token ids that end generation (the model's EOS always does).
        ignore_eos: keep generating past EOS (benchmarks with a fixed output length).
        logprobs: also report the top-``logprobs`` alternatives of each token (None: no
            log-probabilities at all; 0: only the chosen token's).
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_tokens: int = 16
    seed: int | None = None
    stop_token_ids: frozenset[int] = field(default_factory=frozenset)
    ignore_eos: bool = False
    logprobs: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.temperature <= 2.0:
            raise ValidationError("temperature must be between 0 and 2", param="temperature")
        if not 0.0 < self.top_p <= 1.0:
            raise ValidationError("top_p must be in (0, 1]", param="top_p")
        if self.top_k < 0:
            raise ValidationError("top_k must be 0 or more", param="top_k")
        if self.max_tokens < 1:
            raise ValidationError("max_tokens must be at least 1", param="max_tokens")
        if self.logprobs is not None and not 0 <= self.logprobs <= 20:
            raise ValidationError("logprobs must be between 0 and 20", param="top_logprobs")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """A generated token's log-probability under the model (before temperature) and the top
    alternatives as ``(token_id, logprob)`` pairs, most likely first."""

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


def target_probs(logits: Tensor, params: SamplingParams) -> Tensor:
    """The distribution a non-greedy request samples from: temperature, top-k, top-p applied."""
    scaled = logits.float() / params.temperature
    if params.top_k and params.top_k < scaled.shape[-1]:
        threshold = torch.topk(scaled, params.top_k, dim=-1).values[..., -1:]
        scaled = scaled.masked_fill(scaled < threshold, float("-inf"))
    probs = torch.softmax(scaled, dim=-1)
    if params.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
        # drop a token when the tokens before it already reach top_p (the first always stays)
        drop_sorted = (sorted_probs.cumsum(-1) - sorted_probs) >= params.top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        probs = probs.masked_fill(drop, 0.0)
        probs = probs / probs.sum(-1, keepdim=True)
    return probs


def choose_token(logits: Tensor, params: SamplingParams, generator: torch.Generator) -> int:
    """One next token from a ``[vocab]`` row of logits."""
    if params.greedy:
        return int(torch.argmax(logits))
    return int(torch.multinomial(target_probs(logits, params), 1, generator=generator))


def logprobs_of(logits: Tensor, token_id: int, top: int) -> TokenLogprob:
    """The log-probability of ``token_id`` and the ``top`` best alternatives."""
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    best: tuple[tuple[int, float], ...] = ()
    if top:
        values, ids = torch.topk(logprobs, top)
        best = tuple((int(i), float(v)) for i, v in zip(ids, values, strict=True))
    return TokenLogprob(token_id, float(logprobs[token_id]), best)


def verify_draft(
    logits: Tensor,
    draft: list[int],
    draft_probs: Tensor | None,
    params: SamplingParams,
    generator: torch.Generator,
) -> list[int]:
    """Speculative decoding's accept/reject rule; returns the tokens to keep (at least one).

    ``logits`` are the target model's ``[len(draft) + 1, vocab]`` rows: row ``i`` predicts the
    token after draft token ``i - 1``. Greedy keeps draft tokens while they equal the target's
    argmax, then adds the target's own token, so output is exactly non-speculative greedy output.
    Sampling accepts draft token ``d`` with probability ``min(1, p(d) / q(d))`` (``q`` is one-hot
    for a deterministic drafter such as prompt lookup) and on rejection samples from the
    normalised residual ``max(0, p - q)``, which leaves the output distribution equal to ``p``.
    """
    kept: list[int] = []
    if params.greedy:
        targets = torch.argmax(logits, dim=-1).tolist()
        for index, token in enumerate(draft):
            if targets[index] != token:
                break
            kept.append(token)
        kept.append(int(targets[len(kept)]))
        return kept
    probs = target_probs(logits, params)
    for index, token in enumerate(draft):
        p = probs[index]
        if draft_probs is None:
            q = torch.zeros_like(p)
            q[token] = 1.0
        else:
            q = draft_probs[index]
        ratio = float(p[token]) / max(float(q[token]), 1e-20)
        if float(torch.rand((), generator=generator)) < min(1.0, ratio):
            kept.append(token)
            continue
        residual = torch.clamp(p - q, min=0.0)
        total = float(residual.sum())
        residual = residual / total if total > 0 else p
        kept.append(int(torch.multinomial(residual, 1, generator=generator)))
        return kept
    kept.append(int(torch.multinomial(probs[len(draft)], 1, generator=generator)))
    return kept
