"""OutputGuard: what the model says, checked before the user sees it.

- content moderation (category lexicon), on the answer
- system-prompt leakage: a long verbatim run of the system prompt in the answer
- JSON-schema validation when the request asks for JSON, with a re-ask through any ``ChatModel``
- groundedness against the request's context (``documents`` and tool messages)

PII and secret leakage and canary leakage are :class:`~genai_factory.guardrails.pii.PIIGuard`'s
and :class:`~genai_factory.guardrails.injection.InjectionGuard`'s ``check_output``; the composite
guard runs them together.

Example (moderation only, no model)::

    guard = OutputGuard(grounding=None)
    verdict = await guard.check_output("Step 1: build a pipe bomb", request, None)
    verdict.decision    # "block", finding moderation.weapons
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Sequence
from typing import Any, Literal

from genai_factory.guardrails.base import Decision, combine, document_texts
from genai_factory.guardrails.output.grounding import GroundednessChecker
from genai_factory.guardrails.output.moderation import LexiconModerator
from genai_factory.guardrails.output.structured import reask_request, request_schema, validate_json
from genai_factory.shared.contracts import ChatModel
from genai_factory.shared.models import ChatCompletionRequest, Finding, Principal, Verdict

__all__ = ["OutputGuard", "system_prompt_leak"]

Action = Literal["block", "warn"]


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def system_prompt_leak(answer: str, system_prompt: str, run: int = 12) -> bool:
    """True when ``answer`` repeats ``run`` consecutive words of ``system_prompt``.

    >>> prompt = "You are Acme's support bot. Never discuss pricing with customers under any circumstances."
    >>> system_prompt_leak("My rules: never discuss pricing with customers under any circumstances.", prompt, 8)
    True
    >>> system_prompt_leak("I cannot discuss pricing.", prompt, 8)
    False
    """
    secret = _words(system_prompt)
    if len(secret) < run:
        return False
    shingles = {tuple(secret[i : i + run]) for i in range(len(secret) - run + 1)}
    said = _words(answer)
    return any(tuple(said[i : i + run]) in shingles for i in range(len(said) - run + 1))


class OutputGuard:
    """Moderation, prompt leakage, structured-output and groundedness checks on an answer.

    Set a component to None to switch its check off. ``moderation_action`` / ``grounded_action``
    ``warn`` report without blocking. ``reask_model`` (any ChatModel) gets up to ``max_reasks``
    chances to fix JSON that fails the schema; the fixed answer comes back as a redaction.
    """

    def __init__(
        self,
        moderation: LexiconModerator | None = None,
        moderation_action: Action = "block",
        grounding: GroundednessChecker | None = None,
        grounded_action: Action = "warn",
        max_unsupported_share: float = 0.5,
        check_json: bool = True,
        json_schema: dict[str, Any] | None = None,
        reask_model: ChatModel | None = None,
        max_reasks: int = 1,
        detect_prompt_leak: bool = True,
        leak_run_words: int = 12,
    ) -> None:
        self.moderation = moderation if moderation is not None else LexiconModerator()
        self.moderation_action: Action = moderation_action
        self.grounding = grounding
        self.grounded_action: Action = grounded_action
        self.max_unsupported_share = max_unsupported_share
        self.check_json = check_json
        self.json_schema = json_schema
        self.reask_model = reask_model
        self.max_reasks = max_reasks
        self.detect_prompt_leak = detect_prompt_leak
        self.leak_run_words = leak_run_words

    @staticmethod
    def context_of(request: ChatCompletionRequest) -> list[str]:
        """What an answer may be grounded in: documents and tool results."""
        tools = [m.text() for m in request.messages if m.role in {"tool", "function"}]
        return document_texts(request) + [t for t in tools if t]

    async def _structured(
        self,
        text: str,
        request: ChatCompletionRequest,
        findings: list[Finding],
        timings: dict[str, float],
    ) -> tuple[Decision, str]:
        wants_json, schema = request_schema(request)
        schema = schema if schema is not None else self.json_schema
        if not (wants_json or self.json_schema is not None):
            return "allow", text
        started = time.perf_counter()
        errors = validate_json(text, schema)
        timings["output.json_schema"] = (time.perf_counter() - started) * 1000
        if not errors:
            return "allow", text
        findings.append(
            Finding(
                rule_id="output.json_schema",
                category="structure",
                layer="json_schema",
                message="; ".join(errors),
            )
        )
        answer = text
        for attempt in range(self.max_reasks if self.reask_model is not None else 0):
            assert self.reask_model is not None
            started = time.perf_counter()
            response = await self.reask_model.complete(reask_request(request, answer, errors))
            timings["output.reask"] = (
                timings.get("output.reask", 0.0) + (time.perf_counter() - started) * 1000
            )
            answer = response.text()
            errors = validate_json(answer, schema)
            if not errors:
                findings.append(
                    Finding(
                        rule_id="output.reask_fixed",
                        category="structure",
                        layer="json_schema",
                        score=1.0,
                        message=f"valid after {attempt + 1} re-ask(s)",
                    )
                )
                return "redact", answer
        return "block", text

    def _grounded(
        self, text: str, request: ChatCompletionRequest, findings: list[Finding]
    ) -> Decision:
        context = self.context_of(request)
        if self.grounding is None or not context:
            return "allow"
        report = self.grounding.check(text, context)
        for sentence in report.unsupported:
            findings.append(
                Finding(
                    rule_id="output.ungrounded",
                    category="groundedness",
                    layer="grounding",
                    score=round(max(0.0, 1.0 - sentence.similarity), 4),
                    start=sentence.start,
                    end=sentence.end,
                    message=f"no supporting context (best cosine {sentence.similarity:.2f})",
                )
            )
        too_many = report.unsupported_share > self.max_unsupported_share
        return "block" if too_many and self.grounded_action == "block" else "allow"

    async def check_input(
        self, request: ChatCompletionRequest, principal: Principal | None
    ) -> Verdict:
        """Nothing to check on the way in: outputs are this guard's job."""
        return Verdict(decision="allow")

    async def check_output(
        self, text: str, request: ChatCompletionRequest, principal: Principal | None
    ) -> Verdict:
        findings: list[Finding] = []
        timings: dict[str, float] = {}
        decisions: list[Decision] = []
        if self.moderation is not None:
            started = time.perf_counter()
            flagged = self.moderation.findings(text)
            timings["output.moderation"] = (time.perf_counter() - started) * 1000
            findings += flagged
            if flagged and self.moderation_action == "block":
                decisions.append("block")
        if self.detect_prompt_leak:
            started = time.perf_counter()
            system = " ".join(
                m.text() for m in request.messages if m.role in {"system", "developer"}
            )
            if system and system_prompt_leak(text, system, self.leak_run_words):
                findings.append(
                    Finding(
                        rule_id="output.system_prompt_leak",
                        category="prompt_leak",
                        layer="leakage",
                        message=f"the answer repeats {self.leak_run_words}+ words of the system prompt",
                    )
                )
                decisions.append("block")
            timings["output.prompt_leak"] = (time.perf_counter() - started) * 1000
        new_text = text
        if self.check_json and "block" not in decisions:
            decision, new_text = await self._structured(text, request, findings, timings)
            decisions.append(decision)
        if self.grounding is not None and "block" not in decisions:
            started = time.perf_counter()
            decisions.append(await asyncio.to_thread(self._grounded, new_text, request, findings))
            timings["output.grounding"] = (time.perf_counter() - started) * 1000
        return combine(decisions, findings, timings, new_text if new_text != text else None)

    def categories(self) -> Sequence[str]:
        return [] if self.moderation is None else list(self.moderation.categories or [])
