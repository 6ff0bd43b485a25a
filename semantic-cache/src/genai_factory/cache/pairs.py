"""Pair evaluation: would the cache serve ``a``'s answer for ``b``, and should it?

Each line of a pairs file is ``{"a": ..., "b": ..., "label": true|false}`` (label true: the same
answer fits both), optionally with ``"scope_a"``/``"scope_b"`` (CacheScope fields; different
scopes never hit). A pair is a predicted hit when the scopes are equal and the prompts normalise
equal (exact tier) or reach the threshold and pass the verifier (semantic tier).

Example:
    >>> from genai_factory.cache.pairs import parse_pairs, score
    >>> pairs = parse_pairs(['{"a": "x", "b": "y", "label": true}'], source="demo")
    >>> pairs[0].label
    True
    >>> score(predicted=[True, True], labels=[True, False])
    {'precision': 0.5, 'recall': 1.0, 'f1': 0.667, 'hit_rate': 1.0, 'tp': 1, 'fp': 1, 'fn': 0, 'tn': 0}
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from genai_factory.cache.embedding import TextEmbedder
from genai_factory.cache.entry import CacheScope
from genai_factory.cache.normalize import normalize_prompt
from genai_factory.cache.policy import ThresholdPolicy
from genai_factory.cache.verify import PairVerifier
from genai_factory.shared.errors import ValidationError

__all__ = ["Pair", "PairScores", "evaluate_pairs", "parse_pairs", "score"]

DEFAULT_CURVE = tuple(round(0.70 + 0.01 * i, 2) for i in range(30))
MODEL_CURVE = tuple(round(0.05 * i, 2) for i in range(20))


@dataclass(frozen=True, slots=True)
class Pair:
    a: str
    b: str
    label: bool
    scope_a: CacheScope = field(default_factory=lambda: CacheScope(tenant="eval"))
    scope_b: CacheScope = field(default_factory=lambda: CacheScope(tenant="eval"))
    kind: str = ""


def _scope(value: Any, where: str) -> CacheScope:
    if value is None:
        return CacheScope(tenant="eval")
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ValidationError(f"{where} must be an object of strings", param=where)
    try:
        return CacheScope(**{"tenant": "eval", **value})
    except TypeError:
        raise ValidationError(
            f"{where} has unknown fields (allowed: {sorted(CacheScope(tenant='').as_dict())})",
            param=where,
        ) from None


def parse_pairs(lines: Iterable[str], source: str = "pairs") -> list[Pair]:
    """Parse JSONL pairs; a malformed line raises ValidationError naming ``source:line``."""
    pairs: list[Pair] = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        where = f"{source}:{number}"
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValidationError(f"{where}: not valid JSON ({exc.msg})", param=where) from None
        if not isinstance(data, dict):
            raise ValidationError(f"{where}: each line must be a JSON object", param=where)
        a, b, label = data.get("a"), data.get("b"), data.get("label")
        if not isinstance(a, str) or not isinstance(b, str) or not a.strip() or not b.strip():
            raise ValidationError(f"{where}: 'a' and 'b' must be non-empty strings", param=where)
        if not isinstance(label, bool):
            raise ValidationError(f"{where}: 'label' must be true or false", param=where)
        pairs.append(
            Pair(
                a=a,
                b=b,
                label=label,
                scope_a=_scope(data.get("scope_a"), f"{where}: scope_a"),
                scope_b=_scope(data.get("scope_b"), f"{where}: scope_b"),
                kind=str(data.get("kind", "")),
            )
        )
    if not pairs:
        raise ValidationError(f"{source}: no pairs found", param=source)
    return pairs


def score(predicted: Sequence[bool], labels: Sequence[bool]) -> dict[str, Any]:
    """Precision (1.0 when nothing is predicted), recall, F1 and hit rate, rounded to 3 places."""
    tp = sum(p and y for p, y in zip(predicted, labels, strict=True))
    fp = sum(p and not y for p, y in zip(predicted, labels, strict=True))
    fn = sum(not p and y for p, y in zip(predicted, labels, strict=True))
    tn = len(labels) - tp - fp - fn
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": round(precision, 3),
        "recall": round(recall, 3),
        "f1": round(f1, 3),
        "hit_rate": round((tp + fp) / len(labels), 3) if labels else 0.0,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
    }


@dataclass(slots=True)
class PairScores:
    """Per pair: similarity, rule and learned verdicts, exact and scope flags.

    ``decide`` gives the cache's decision at any cosine gate (and, with a learned verifier, any
    probability threshold), so curves need one pass over the data.
    """

    similarity: np.ndarray[Any, Any]
    verified: list[bool]
    exact: list[bool]
    same_scope: list[bool]
    labels: list[bool]
    embed_seconds: float
    hard_passed: list[bool] = field(default_factory=list)
    probability: list[float | None] = field(default_factory=list)

    def decide(
        self, threshold: float, verify: bool = True, probability: float | None = None
    ) -> list[bool]:
        """Hits at cosine ``threshold``; ``probability`` replaces the model's own threshold."""
        if verify and probability is not None and self.probability:
            passed = [
                hard and (p is None or p >= probability)
                for hard, p in zip(self.hard_passed, self.probability, strict=True)
            ]
        else:
            passed = self.verified
        return [
            same and (exact or (sim >= threshold and (ok or not verify)))
            for sim, ok, exact, same in zip(
                self.similarity.tolist(), passed, self.exact, self.same_scope, strict=True
            )
        ]


def pair_scores(
    pairs: Sequence[Pair], embedder: TextEmbedder, verifier: PairVerifier
) -> PairScores:
    texts = list(dict.fromkeys([p.a for p in pairs] + [p.b for p in pairs]))
    started = time.perf_counter()
    vectors = embedder.encode(texts)
    embed_seconds = time.perf_counter() - started
    row = {text: i for i, text in enumerate(texts)}
    a = vectors[[row[p.a] for p in pairs]]
    b = vectors[[row[p.b] for p in pairs]]
    similarity = np.sum(a * b, axis=1)
    verdicts = [
        verifier.verify(p.b, p.a, similarity=float(s))
        for p, s in zip(pairs, similarity.tolist(), strict=True)
    ]
    hard = PairVerifier(checks=verifier.checks)
    return PairScores(
        similarity=similarity,
        verified=[v.passed for v in verdicts],
        exact=[normalize_prompt(p.a) == normalize_prompt(p.b) for p in pairs],
        same_scope=[p.scope_a.key() == p.scope_b.key() for p in pairs],
        labels=[p.label for p in pairs],
        embed_seconds=embed_seconds,
        hard_passed=[hard.verify(p.b, p.a).passed for p in pairs],
        probability=[v.probability for v in verdicts],
    )


def evaluate_pairs(
    pairs: Sequence[Pair],
    embedder: TextEmbedder,
    verifier: PairVerifier | None = None,
    threshold: float | None = None,
    curve: Sequence[float] = DEFAULT_CURVE,
) -> dict[str, Any]:
    """Scores at the default settings, without the verifier, and over a threshold curve."""
    verifier = verifier or PairVerifier.learned()
    threshold = ThresholdPolicy().default if threshold is None else threshold
    scores = pair_scores(pairs, embedder, verifier)
    labels = scores.labels
    report: dict[str, Any] = {
        "pairs": len(pairs),
        "positives": sum(labels),
        "embedding_model": embedder.model_id,
        "embedding_seconds": round(scores.embed_seconds, 3),
        "default": {"threshold": threshold, **score(scores.decide(threshold), labels)},
        "without_verifier": {
            "threshold": threshold,
            **score(scores.decide(threshold, verify=False), labels),
        },
        "curve": [{"threshold": t, **score(scores.decide(t), labels)} for t in curve],
    }
    if verifier.model is not None:  # the learned stage's threshold, at the default cosine gate
        report["model_curve"] = [
            {"probability": p, **score(scores.decide(threshold, probability=p), labels)}
            for p in MODEL_CURVE
        ]
    return report
