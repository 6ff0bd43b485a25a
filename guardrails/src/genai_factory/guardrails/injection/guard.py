"""InjectionGuard: the prompt-injection and jailbreak defence behind the ``Guard`` contract.

Four layers, each measurable alone (:meth:`InjectionGuard.layer_scores`):

1. ``normalize``: invisible characters, homoglyphs, encoded payloads (views for the others)
2. ``heuristics``: weighted patterns over every view
3. ``similarity``: cosine similarity of MiniLM embeddings to known attacks
4. ``classifier``: logistic regression on the same embeddings (trained in this repository)

Each layer's score is calibrated so that 0.5 is its decision threshold; the combined score is the
highest of them. User messages are scanned as direct injection; tool messages and the request's
``documents`` as *indirect* injection (data that tries to give orders), with their own threshold.
Canary tokens, when planted, catch system-prompt leakage in the answer.

Example (loads the embedding model, so not run as a doctest)::

    guard = InjectionGuard()
    verdict = await guard.check_input(request, principal)
    verdict.decision, [(f.layer, f.rule_id) for f in verdict.findings]
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from genai_factory.guardrails.base import (
    Decision,
    Segment,
    combine,
    encode_rewrites,
    request_segments,
)
from genai_factory.guardrails.embeddings import MiniLMEmbedder
from genai_factory.guardrails.injection.canary import CanaryTokens
from genai_factory.guardrails.injection.classifier import InjectionClassifier
from genai_factory.guardrails.injection.heuristics import HeuristicScanner
from genai_factory.guardrails.injection.normalize import Normalizer
from genai_factory.guardrails.injection.similarity import AttackSimilarity
from genai_factory.shared.models import ChatCompletionRequest, Finding, Principal, Verdict

__all__ = ["LAYERS", "InjectionGuard", "SegmentScan"]

Layer = Literal["normalize", "heuristics", "similarity", "classifier"]
LAYERS: tuple[Layer, ...] = ("normalize", "heuristics", "similarity", "classifier")
_EMBEDDED_VIEWS = {"canonical", "base64", "hex", "url"}


@dataclass(slots=True)
class SegmentScan:
    """Layer scores and findings for one scanned text."""

    scores: dict[str, float] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)
    windows: int = 0  # text windows embedded (a long text stops early once its score is decisive)

    @property
    def combined(self) -> float:
        return max(self.scores.values(), default=0.0)


def _windows(text: str, size: int, limit: int) -> list[str]:
    """Overlapping windows over a long text, so an attack after the embedder's cut-off is seen."""
    if len(text) <= size:
        return [text]
    step = size * 3 // 4
    return [text[i : i + size] for i in range(0, len(text), step)][:limit]


class InjectionGuard:
    """Direct and indirect prompt-injection / jailbreak detection.

    ``layers`` picks the layers; ``threshold`` and ``document_threshold`` are the combined scores
    that block a user message and tool output / documents; ``mode`` ``detect`` only reports.
    ``plant_canary`` adds a per-conversation canary to the system message on input (a rewrite)
    and ``check_output`` blocks an answer that leaks it or any of ``canaries``.
    """

    def __init__(
        self,
        layers: Sequence[Layer] = LAYERS,
        embedder: MiniLMEmbedder | None = None,
        normalizer: Normalizer | None = None,
        heuristics: HeuristicScanner | None = None,
        similarity: AttackSimilarity | None = None,
        classifier: InjectionClassifier | None = None,
        threshold: float = 0.5,
        document_threshold: float = 0.5,
        roles: Sequence[str] = ("user",),
        scan_untrusted: bool = True,
        mode: Literal["block", "detect"] = "block",
        plant_canary: bool = False,
        canary_secret: str | None = None,
        canaries: Sequence[str] = (),
        window_chars: int = 1500,
        max_windows: int = 8,
        early_exit: float | None = 0.9,
    ) -> None:
        unknown = sorted(set(layers) - set(LAYERS))
        if unknown:
            raise ValueError(f"unknown layers {unknown}; choose from {LAYERS}")
        self.layers = list(layers)
        needs_embeddings = bool({"similarity", "classifier"} & set(self.layers))
        self.embedder = embedder if embedder is not None else MiniLMEmbedder()
        self.normalizer = normalizer if normalizer is not None else Normalizer()
        self.heuristics = heuristics if heuristics is not None else HeuristicScanner()
        self.similarity = (
            similarity
            if similarity is not None
            else AttackSimilarity(self.embedder)
            if "similarity" in self.layers
            else None
        )
        self.classifier = (
            classifier
            if classifier is not None
            else InjectionClassifier()
            if "classifier" in self.layers
            else None
        )
        self._needs_embeddings = needs_embeddings
        self.threshold = threshold
        self.document_threshold = document_threshold
        self.roles = list(roles)
        self.scan_untrusted = scan_untrusted
        self.mode: Literal["block", "detect"] = mode
        self.plant_canary = plant_canary
        self.canary_secret = canary_secret
        self.canaries = list(canaries)
        self._canary = CanaryTokens(canary_secret)
        self.window_chars = window_chars
        self.max_windows = max_windows
        # a long text stops being embedded once its score reaches this: the verdict cannot change
        self.early_exit = early_exit

    def to_params(self) -> dict[str, object]:
        params: dict[str, object] = {
            "layers": self.layers,
            "threshold": self.threshold,
            "document_threshold": self.document_threshold,
            "roles": self.roles,
            "scan_untrusted": self.scan_untrusted,
            "mode": self.mode,
            "plant_canary": self.plant_canary,
            "canaries": self.canaries,
            "window_chars": self.window_chars,
            "max_windows": self.max_windows,
            "early_exit": self.early_exit,
        }
        if self.canary_secret is not None:
            params["canary_secret"] = self.canary_secret
        if self.heuristics.extra_patterns:
            params["heuristics"] = self.heuristics
        if self.similarity is not None and (
            self.similarity.extra_corpus or self.similarity.threshold != 0.45
        ):
            params["similarity"] = self.similarity
        if self.classifier is not None and (
            self.classifier.path is not None or self.classifier.threshold is not None
        ):
            params["classifier"] = self.classifier
        return params

    def warm_up(self) -> None:
        """Load the embedding model and the attack corpus now."""
        if self._needs_embeddings:
            self.layer_scores("warm up")

    # ------------------------------------------------------------------------------- scanning

    def layer_scores(self, text: str) -> SegmentScan:
        """Every enabled layer's calibrated score (0.5 = its threshold) for one text."""
        scan = SegmentScan()
        started = time.perf_counter()
        normalized = self.normalizer.normalize(text)
        scan.timings_ms["injection.normalize"] = (time.perf_counter() - started) * 1000
        if "normalize" in self.layers:
            scan.scores["normalize"] = max((f.score for f in normalized.findings), default=0.0)
            scan.findings += [f for f in normalized.findings if f.score >= 0.5]
        if "heuristics" in self.layers:
            started = time.perf_counter()
            heuristic = self.heuristics.scan(normalized.texts())
            scan.timings_ms["injection.heuristics"] = (time.perf_counter() - started) * 1000
            scan.scores["heuristics"] = heuristic.score
            if heuristic.score >= 0.5:
                scan.findings += [
                    Finding(
                        rule_id=m.rule_id,
                        category=m.category,
                        layer="heuristics",
                        score=m.weight,
                        message=f"pattern matched in the {normalized.views[m.view].kind} view",
                    )
                    for m in heuristic.matches
                ]
        if self._needs_embeddings and (self.similarity or self.classifier):
            per_view = [
                _windows(view.text, self.window_chars, self.max_windows)
                for view in normalized.views
                if view.kind in _EMBEDDED_VIEWS
            ]
            # every view's first window first; the rest of a long text only when still needed
            stages = [[w[0] for w in per_view], [x for w in per_view for x in w[1:]]]
            vectors = np.zeros((0, 384), dtype=np.float32)
            for stage in stages:
                # the first windows always run (every layer explains a short text); the rest
                # of a long one only while its score could still change the verdict
                if not stage or (vectors.shape[0] and self._settled(scan)):
                    continue
                started = time.perf_counter()
                vectors = np.concatenate([vectors, self.embedder.encode(stage)])
                elapsed = (time.perf_counter() - started) * 1000
                scan.timings_ms["injection.embed"] = (
                    scan.timings_ms.get("injection.embed", 0.0) + elapsed
                )
                self._score_vectors(scan, vectors)
            scan.windows = int(vectors.shape[0])
        return scan

    def _settled(self, scan: SegmentScan) -> bool:
        """True when the scores so far already decide the text (``early_exit`` reached)."""
        return self.early_exit is not None and scan.combined >= self.early_exit

    def _score_vectors(self, scan: SegmentScan, vectors: npt.NDArray[np.float32]) -> None:
        """Similarity and classifier scores over every window embedded so far (the max)."""
        scan.findings = [f for f in scan.findings if f.layer not in {"similarity", "classifier"}]
        if self.similarity is not None and "similarity" in self.layers:
            started = time.perf_counter()
            sims = self.similarity.similarities(vectors)
            best = int(np.argmax(sims))
            score = self.similarity.score_similarity(float(sims[best]))
            scan.timings_ms["injection.similarity"] = scan.timings_ms.get(
                "injection.similarity", 0.0
            ) + ((time.perf_counter() - started) * 1000)
            scan.scores["similarity"] = score
            if score >= 0.5:
                category, _, similarity = self.similarity.nearest(vectors[best])
                scan.findings.append(
                    Finding(
                        rule_id=f"similarity.{category}",
                        category=category,
                        layer="similarity",
                        score=round(score, 4),
                        message=f"cosine {similarity:.2f} to a known {category} attack",
                    )
                )
        if self.classifier is not None and "classifier" in self.layers:
            started = time.perf_counter()
            probability = max(self.classifier.probabilities(vectors), default=0.0)
            score = self.classifier.score(probability)
            scan.timings_ms["injection.classifier"] = scan.timings_ms.get(
                "injection.classifier", 0.0
            ) + ((time.perf_counter() - started) * 1000)
            scan.scores["classifier"] = score
            if score >= 0.5:
                scan.findings.append(
                    Finding(
                        rule_id="classifier.logreg",
                        category="prompt_injection",
                        layer="classifier",
                        score=round(score, 4),
                        message=f"P(injection) = {probability:.2f}",
                    )
                )

    def score(self, text: str) -> float:
        """The combined score of one text (0.5 = the default decision threshold)."""
        return self.layer_scores(text).combined

    def _scan_segments(
        self, segments: list[Segment]
    ) -> tuple[list[Decision], list[Finding], dict[str, float]]:
        decisions: list[Decision] = []
        findings: list[Finding] = []
        timings: dict[str, float] = {}
        for segment in segments:
            scan = self.layer_scores(segment.text)
            for name, value in scan.timings_ms.items():
                timings[name] = timings.get(name, 0.0) + value
            limit = self.document_threshold if segment.untrusted_data else self.threshold
            hit = scan.combined >= limit
            where = "document" if segment.source == "document" else f"message {segment.index}"
            for finding in scan.findings:
                findings.append(
                    finding.model_copy(
                        update={
                            "category": "indirect_injection"
                            if segment.untrusted_data and finding.layer != "normalize"
                            else finding.category,
                            "message": f"{finding.message} ({where}, {segment.role})",
                        }
                    )
                )
            if hit:
                decisions.append("block" if self.mode == "block" else "allow")
        return decisions, findings, timings

    # ---------------------------------------------------------------------------- the contract

    def _canary_key(self, request: ChatCompletionRequest) -> str:
        # leave system messages out: planting the canary rewrites them
        return "\x1e".join(
            f"{m.role}:{m.text()}"
            for m in request.messages
            if m.role not in {"system", "developer"}
        )[:4096]

    def canary_for(self, request: ChatCompletionRequest) -> str:
        return self._canary.token_for(request.model + "\x1f" + self._canary_key(request))

    async def check_input(
        self, request: ChatCompletionRequest, principal: Principal | None
    ) -> Verdict:
        roles = list(self.roles) + (["tool", "function"] if self.scan_untrusted else [])
        segments = request_segments(request, roles, include_documents=self.scan_untrusted)
        decisions, findings, timings = await asyncio.to_thread(self._scan_segments, segments)
        decision: Decision = max(decisions, key=lambda d: d == "block", default="allow")
        if decision != "block" and self.plant_canary:
            token = self.canary_for(request)
            rewrites = {
                i: CanaryTokens.plant(m.text(), token)
                for i, m in enumerate(request.messages)
                if m.role in {"system", "developer"}
            }
            if rewrites:
                return combine(["redact"], findings, timings, encode_rewrites(request, rewrites))
        return combine([decision], findings, timings)

    async def check_output(
        self, text: str, request: ChatCompletionRequest, principal: Principal | None
    ) -> Verdict:
        started = time.perf_counter()
        tokens = list(self.canaries) + ([self.canary_for(request)] if self.plant_canary else [])
        findings = self._canary.leaks(text, tokens) if tokens else []
        timings = {"canary": (time.perf_counter() - started) * 1000}
        return combine(["block" if findings else "allow"], findings, timings)
