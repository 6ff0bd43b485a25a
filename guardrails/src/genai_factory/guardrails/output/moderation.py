"""Content moderation with a category lexicon: fast, explainable, no model.

The packaged lexicon (``data/moderation_lexicon.json``) maps categories (violence, weapons,
self_harm, sexual, hate, harassment, illegal_drugs, cybercrime) to weighted phrases; a category
scores the noisy-or of its matches and is flagged at its own threshold. Extra or replacement
lexicons load from a JSON file of the same shape.

Example:
    >>> moderator = LexiconModerator()
    >>> [(f.category, f.rule_id) for f in moderator.findings("Here is how to build a pipe bomb.")]
    [('weapons', 'moderation.weapons')]
    >>> moderator.findings("The recipe needs two eggs.")
    []
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from genai_factory.shared.models import Finding

__all__ = ["CategoryScore", "LexiconModerator"]


@dataclass(frozen=True, slots=True)
class CategoryScore:
    category: str
    score: float
    threshold: float
    spans: list[tuple[int, int]]

    @property
    def flagged(self) -> bool:
        return self.score >= self.threshold


class LexiconModerator:
    """Scores text per category. ``categories`` restricts to some; ``lexicon_path`` replaces the
    packaged lexicon; ``threshold`` overrides every category's own threshold."""

    def __init__(
        self,
        categories: Sequence[str] | None = None,
        lexicon_path: str | None = None,
        threshold: float | None = None,
    ) -> None:
        self.categories = list(categories) if categories is not None else None
        self.lexicon_path = lexicon_path
        self.threshold = threshold
        if lexicon_path is None:
            raw = resources.files("genai_factory.guardrails").joinpath(
                "data/moderation_lexicon.json"
            )
            data: dict[str, Any] = json.loads(raw.read_text(encoding="utf-8"))
        else:
            data = json.loads(Path(lexicon_path).read_text(encoding="utf-8"))
        self._compiled: dict[str, tuple[float, list[tuple[re.Pattern[str], float]]]] = {}
        for name, spec in data["categories"].items():
            if self.categories is not None and name not in self.categories:
                continue
            limit = float(threshold if threshold is not None else spec.get("threshold", 0.6))
            terms = []
            for phrase, weight in spec["terms"].items():
                try:
                    terms.append(
                        (re.compile(rf"(?<!\w)(?:{phrase})(?!\w)", re.IGNORECASE), float(weight))
                    )
                except re.error as exc:
                    raise ValueError(
                        f"moderation lexicon {name}: bad phrase {phrase!r} ({exc})"
                    ) from None
            self._compiled[name] = (limit, terms)
        if self.categories is not None:
            missing = sorted(set(self.categories) - set(self._compiled))
            if missing:
                raise ValueError(f"unknown moderation categories {missing}")

    def scores(self, text: str) -> list[CategoryScore]:
        out = []
        for name, (limit, terms) in self._compiled.items():
            miss = 1.0
            spans: list[tuple[int, int]] = []
            for pattern, weight in terms:
                found = pattern.search(text)
                if found:
                    miss *= 1.0 - weight
                    spans.append((found.start(), found.end()))
            out.append(CategoryScore(name, round(1.0 - miss, 6), limit, spans))
        return out

    def findings(self, text: str) -> list[Finding]:
        return [
            Finding(
                rule_id=f"moderation.{s.category}",
                category=s.category,
                layer="moderation",
                score=min(1.0, s.score),
                start=s.spans[0][0],
                end=s.spans[0][1],
                message=f"{s.category} language ({len(s.spans)} phrases)",
            )
            for s in self.scores(text)
            if s.flagged
        ]
