"""Prompt-injection and jailbreak defence: normalisation, heuristics, similarity, classifier, canaries."""

from genai_factory.guardrails.injection.canary import CanaryTokens
from genai_factory.guardrails.injection.classifier import InjectionClassifier
from genai_factory.guardrails.injection.guard import LAYERS, InjectionGuard, SegmentScan
from genai_factory.guardrails.injection.heuristics import HeuristicScanner
from genai_factory.guardrails.injection.normalize import Normalizer
from genai_factory.guardrails.injection.similarity import AttackSimilarity

__all__ = [
    "LAYERS",
    "AttackSimilarity",
    "CanaryTokens",
    "HeuristicScanner",
    "InjectionClassifier",
    "InjectionGuard",
    "Normalizer",
    "SegmentScan",
]
