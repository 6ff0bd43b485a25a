"""PII and secrets: rule recognisers, Presidio NER, anonymisation, pseudonymisation, the PII guard."""

from genai_factory.guardrails.pii.analyzer import AnalysisResult, PIIAnalyzer
from genai_factory.guardrails.pii.anonymizer import Anonymized, Anonymizer
from genai_factory.guardrails.pii.guard import PIIGuard
from genai_factory.guardrails.pii.ner import PresidioNER
from genai_factory.guardrails.pii.vault import PseudonymVault, VaultStore

__all__ = [
    "AnalysisResult",
    "Anonymized",
    "Anonymizer",
    "PIIAnalyzer",
    "PIIGuard",
    "PresidioNER",
    "PseudonymVault",
    "VaultStore",
]
