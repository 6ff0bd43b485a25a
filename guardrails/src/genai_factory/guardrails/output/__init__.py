"""Output rails: moderation, prompt leakage, structured output with re-ask, groundedness."""

from genai_factory.guardrails.output.grounding import GroundednessChecker, GroundednessReport
from genai_factory.guardrails.output.guard import OutputGuard, system_prompt_leak
from genai_factory.guardrails.output.moderation import LexiconModerator
from genai_factory.guardrails.output.structured import reask_request, validate_json

__all__ = [
    "GroundednessChecker",
    "GroundednessReport",
    "LexiconModerator",
    "OutputGuard",
    "reask_request",
    "system_prompt_leak",
    "validate_json",
]
