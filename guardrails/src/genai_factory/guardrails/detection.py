"""What every detector in this package returns: a typed span of text with a score.

A :class:`Detection` says which rule saw what, where, how sure it is and in which layer; it turns
into the platform's :class:`~genai_factory.shared.models.Finding` for a verdict.
:func:`resolve_overlaps` keeps one detection per stretch of text so anonymisers never rewrite the
same characters twice.

Examples:
    >>> a = Detection("EMAIL_ADDRESS", 0, 9, 0.9, "email", "rules", "a@b.co.uk")
    >>> b = Detection("URL", 2, 9, 0.5, "url", "rules", "b.co.uk")
    >>> [d.entity_type for d in resolve_overlaps([b, a])]
    ['EMAIL_ADDRESS']
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from genai_factory.shared.models import Finding

__all__ = ["Detection", "resolve_overlaps"]


@dataclass(frozen=True, slots=True)
class Detection:
    """One entity found in a text: ``text[start:end]`` is ``text``."""

    entity_type: str
    start: int
    end: int
    score: float
    rule_id: str
    layer: str
    text: str

    @property
    def length(self) -> int:
        return self.end - self.start

    def overlaps(self, other: Detection) -> bool:
        return self.start < other.end and other.start < self.end

    def shifted(self, offset: int) -> Detection:
        """The same detection with its span moved by ``offset`` characters."""
        return replace(self, start=self.start + offset, end=self.end + offset)

    def to_finding(self, category: str = "pii", message: str | None = None) -> Finding:
        """The platform Finding; the message names the entity, never its value."""
        return Finding(
            rule_id=self.rule_id,
            category=category,
            layer=self.layer,
            score=max(0.0, min(1.0, self.score)),
            start=self.start,
            end=self.end,
            message=message or self.entity_type,
        )


def resolve_overlaps(detections: Iterable[Detection]) -> list[Detection]:
    """Non-overlapping detections in text order: on a clash the higher score wins, then the longer.

    Ties on both keep the earlier one, so the result does not depend on the input order.
    """
    ranked = sorted(detections, key=lambda d: (-d.score, -d.length, d.start, d.entity_type))
    kept: list[Detection] = []
    for candidate in ranked:
        if candidate.length <= 0:
            continue
        if not any(candidate.overlaps(other) for other in kept):
            kept.append(candidate)
    return sorted(kept, key=lambda d: d.start)
