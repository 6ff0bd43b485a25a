"""Groundedness: is each sentence of an answer supported by the context it was given?

The context (retrieved documents, tool output) is cut into sentences; each answer sentence is
embedded and compared with every context sentence. A sentence whose best cosine similarity is
below ``threshold`` is flagged as unsupported, with its span. Short filler sentences ("Sure!")
are skipped. This is a similarity check, not entailment: it catches answers that drift away from
the sources, not subtle contradictions of them.

Example (loads the embedding model, so not run as a doctest)::

    checker = GroundednessChecker(MiniLMEmbedder())
    report = checker.check("Paris is the capital of France. The moon is cheese.",
                           ["France's capital city is Paris."])
    [s.text for s in report.unsupported]   # ['The moon is cheese.']
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from genai_factory.guardrails.embeddings import MiniLMEmbedder

__all__ = ["GroundednessChecker", "GroundednessReport", "SentenceSupport", "split_sentences"]

_SENTENCE = re.compile(r"[^.!?\n]+(?:[.!?]+|$)", re.MULTILINE)


def split_sentences(text: str) -> list[tuple[int, int, str]]:
    """(start, end, sentence) for each sentence of ``text``, whitespace trimmed.

    >>> [s for _, _, s in split_sentences("One. Two!  Three?\\nFour")]
    ['One.', 'Two!', 'Three?', 'Four']
    """
    out = []
    for match in _SENTENCE.finditer(text):
        raw = match.group()
        stripped = raw.strip()
        if stripped:
            start = match.start() + (len(raw) - len(raw.lstrip()))
            out.append((start, start + len(stripped), stripped))
    return out


@dataclass(frozen=True, slots=True)
class SentenceSupport:
    start: int
    end: int
    text: str
    similarity: float
    supported: bool


@dataclass(frozen=True, slots=True)
class GroundednessReport:
    sentences: list[SentenceSupport]

    @property
    def unsupported(self) -> list[SentenceSupport]:
        return [s for s in self.sentences if not s.supported]

    @property
    def unsupported_share(self) -> float:
        return len(self.unsupported) / len(self.sentences) if self.sentences else 0.0


class GroundednessChecker:
    """Flags answer sentences with no similar context sentence (cosine < ``threshold``)."""

    def __init__(
        self,
        embedder: MiniLMEmbedder | None = None,
        threshold: float = 0.55,
        min_words: int = 4,
    ) -> None:
        self.embedder = embedder if embedder is not None else MiniLMEmbedder()
        self.threshold = threshold
        self.min_words = min_words

    def check(self, answer: str, context: Sequence[str]) -> GroundednessReport:
        claims = [s for s in split_sentences(answer) if len(s[2].split()) >= self.min_words]
        sources = [s for text in context for _, _, s in split_sentences(text)]
        if not claims:
            return GroundednessReport([])
        if not sources:
            return GroundednessReport([SentenceSupport(a, b, t, 0.0, False) for a, b, t in claims])
        vectors = self.embedder.encode([t for _, _, t in claims] + sources)
        claim_vectors, source_vectors = vectors[: len(claims)], vectors[len(claims) :]
        best = np.asarray((claim_vectors @ source_vectors.T).max(axis=1))
        return GroundednessReport(
            [
                SentenceSupport(a, b, t, round(float(sim), 4), float(sim) >= self.threshold)
                for (a, b, t), sim in zip(claims, best, strict=True)
            ]
        )
