"""GenAI Factory Guardrails (catalog item 9): PII, prompt injection, output rails, policies, audit.

The guards implement :class:`genai_factory.shared.contracts.Guard`; build them from config with
the shared factory, e.g. ``{type: "genai_factory.guardrails:CompositeGuard", params: {...}}``.
Importing this package is cheap: the classes load on first access and the models on first use.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("genai-factory-guardrails")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"

_EXPORTS = {
    "AuditLog": "genai_factory.guardrails.audit",
    "CompositeGuard": "genai_factory.guardrails.composite",
    "ContentRateLimiter": "genai_factory.guardrails.ratelimit",
    "InjectionGuard": "genai_factory.guardrails.injection",
    "MiniLMEmbedder": "genai_factory.guardrails.embeddings",
    "OutputGuard": "genai_factory.guardrails.output",
    "PIIAnalyzer": "genai_factory.guardrails.pii",
    "PIIGuard": "genai_factory.guardrails.pii",
    "PolicyEngine": "genai_factory.guardrails.policy",
    "StreamingRail": "genai_factory.guardrails.streaming",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'genai_factory.guardrails' has no attribute {name!r}")
    return getattr(import_module(module), name)
