"""The PII analyzer: rule recognisers first, then (optionally) Presidio NER for what rules cannot see.

Rules beat NER where both apply: a NER span that overlaps a rule detection is dropped, so an
e-mail address is never half a "PERSON". The result is non-overlapping and in text order, with
per-layer timings for the verdict.

Example:
    >>> analyzer = PIIAnalyzer(use_ner=False)
    >>> result = analyzer.analyze("Mail ann@example.org or call +44 20 7946 0958.")
    >>> [(d.entity_type, d.text) for d in result.detections]
    [('EMAIL_ADDRESS', 'ann@example.org'), ('PHONE_NUMBER', '+44 20 7946 0958')]
    >>> sorted(result.timings_ms)
    ['pii.rules']
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from genai_factory.guardrails.detection import Detection, resolve_overlaps
from genai_factory.guardrails.pii.ner import PresidioNER
from genai_factory.guardrails.pii.recognizers import Recognizer, default_rule_recognizers

__all__ = ["AnalysisResult", "PIIAnalyzer"]


@dataclass(frozen=True, slots=True)
class AnalysisResult:
    detections: list[Detection]
    timings_ms: dict[str, float] = field(default_factory=dict)


def _mask(text: str, detections: list[Detection]) -> str:
    chars = list(text)
    for d in detections:
        if d.score >= 0.5:
            chars[d.start : d.end] = "#" * (d.end - d.start)
    return "".join(chars)


class PIIAnalyzer:
    """Finds personal data and secrets in text.

    ``entities`` restricts the report to some entity types (None: everything found);
    ``use_ner`` switches the spaCy layer on; ``ner`` shares an already loaded one;
    ``score_threshold`` drops weaker detections.
    """

    def __init__(
        self,
        entities: Sequence[str] | None = None,
        use_ner: bool = True,
        ner: PresidioNER | None = None,
        score_threshold: float = 0.5,
        recognizers: Sequence[Recognizer] | None = None,
    ) -> None:
        self.entities = list(entities) if entities is not None else None
        self.use_ner = use_ner
        self.score_threshold = score_threshold
        self.recognizers = list(recognizers) if recognizers is not None else None
        self._recognizers = (
            list(recognizers) if recognizers is not None else default_rule_recognizers()
        )
        if self.entities is not None:
            wanted = set(self.entities)
            self._recognizers = [r for r in self._recognizers if r.entity_type in wanted]
        self.ner = ner if ner is not None or not use_ner else PresidioNER()

    def to_params(self) -> dict[str, object]:
        params: dict[str, object] = {
            "use_ner": self.use_ner,
            "score_threshold": self.score_threshold,
        }
        if self.entities is not None:
            params["entities"] = self.entities
        if self.ner is not None:
            params["ner"] = self.ner
        return params

    def warm_up(self) -> None:
        """Load the NER model now rather than on the first request."""
        if self.use_ner and self.ner is not None:
            self.ner.find("Warm up with Ada Lovelace in London.")

    def analyze(self, text: str) -> AnalysisResult:
        timings: dict[str, float] = {}
        started = time.perf_counter()
        strict = [r for r in self._recognizers if not getattr(r, "runs_last", False)]
        loose = [r for r in self._recognizers if getattr(r, "runs_last", False)]
        rule_hits = [d for r in strict for d in r.find(text)]
        if loose:
            # loose formats (phone numbers) look at what the strict ones left, so a card number
            # next to a phone number cannot glue the two into one wrong candidate
            masked = _mask(text, rule_hits)
            rule_hits += [d for r in loose for d in r.find(masked)]
        timings["pii.rules"] = (time.perf_counter() - started) * 1000
        ner_hits: list[Detection] = []
        if self.use_ner and self.ner is not None:
            started = time.perf_counter()
            ner_hits = [
                d
                for d in self.ner.find(text)
                if not any(d.overlaps(r) for r in rule_hits)
                and (self.entities is None or d.entity_type in self.entities)
            ]
            timings["pii.ner"] = (time.perf_counter() - started) * 1000
        kept = [d for d in rule_hits + ner_hits if d.score >= self.score_threshold]
        return AnalysisResult(resolve_overlaps(kept), timings)
