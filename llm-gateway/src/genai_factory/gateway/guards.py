"""A small built-in Guard: regular expressions that block or redact, on input and output.

Real screening (PII models, prompt-injection classifiers) lives in the guardrails module and
plugs in through the same ``Guard`` contract; this one lets the gateway stand alone and shows the
shape. For input, a ``redact`` verdict's ``text`` follows the Guard contract: a JSON array with
one entry per request message, the new content or null where a message is unchanged.

Example:
    >>> import asyncio
    >>> guard = RegexGuard(block=[r"(?i)ignore previous instructions"],
    ...                    redact=[r"\\b\\d{3}-\\d{2}-\\d{4}\\b"])
    >>> asyncio.run(guard.check_output("SSN 123-45-6789", None, None)).text
    'SSN [REDACTED]'
    >>> request = ChatCompletionRequest(model="m", messages=[
    ...     {"role": "user", "content": "SSN 123-45-6789"}, {"role": "user", "content": "ok"}])
    >>> asyncio.run(guard.check_input(request, None)).text
    '["SSN [REDACTED]",null]'
"""

from __future__ import annotations

import re
import time

import orjson

from genai_factory.shared.models import ChatCompletionRequest, Finding, Principal, Verdict

__all__ = ["RegexGuard"]


class RegexGuard:
    """Blocks text matching any ``block`` pattern; replaces matches of ``redact`` patterns.

    Args:
        block: patterns that block the request or answer.
        redact: patterns replaced by ``replacement``.
        replacement: what a redacted match becomes.
        screen_input: screen the request's user messages.
        screen_output: screen the model's answer.
    """

    def __init__(
        self,
        block: list[str] | None = None,
        redact: list[str] | None = None,
        replacement: str = "[REDACTED]",
        screen_input: bool = True,
        screen_output: bool = True,
    ) -> None:
        self.block = list(block or [])
        self.redact = list(redact or [])
        self.replacement = replacement
        self.screen_input = screen_input
        self.screen_output = screen_output
        self._block = [re.compile(p) for p in self.block]
        self._redact = [re.compile(p) for p in self.redact]

    def _verdict(self, text: str) -> Verdict:
        started = time.perf_counter()
        findings: list[Finding] = []
        for pattern in self._block:
            match = pattern.search(text)
            if match:
                findings.append(self._finding("block", pattern, match))
        if findings:
            return Verdict(decision="block", findings=findings, timings_ms=self._ms(started))
        rewritten = text
        for pattern in self._redact:
            for match in pattern.finditer(text):
                findings.append(self._finding("redact", pattern, match))
            rewritten = pattern.sub(self.replacement, rewritten)
        if findings:
            return Verdict(
                decision="redact", findings=findings, text=rewritten, timings_ms=self._ms(started)
            )
        return Verdict(decision="allow", timings_ms=self._ms(started))

    @staticmethod
    def _finding(category: str, pattern: re.Pattern[str], match: re.Match[str]) -> Finding:
        return Finding(
            rule_id=pattern.pattern[:64],
            category=category,
            layer="regex",
            start=match.start(),
            end=match.end(),
            message=f"matched /{pattern.pattern[:64]}/",
        )

    @staticmethod
    def _ms(started: float) -> dict[str, float]:
        return {"regex": round((time.perf_counter() - started) * 1000, 3)}

    async def check_input(
        self, request: ChatCompletionRequest, principal: Principal | None
    ) -> Verdict:
        if not self.screen_input:
            return Verdict(decision="allow")
        started = time.perf_counter()
        findings: list[Finding] = []
        rewrites: list[str | None] = []
        for message in request.messages:
            verdict = (
                self._verdict(message.text())
                if message.role == "user"  # the caller's words; system prompts are the operator's
                else Verdict(decision="allow")
            )
            if verdict.decision == "block":
                return verdict
            findings += verdict.findings
            rewrites.append(verdict.text if verdict.decision == "redact" else None)
        if not findings:
            return Verdict(decision="allow", timings_ms=self._ms(started))
        return Verdict(
            decision="redact",
            findings=findings,
            text=orjson.dumps(rewrites).decode(),
            timings_ms=self._ms(started),
        )

    async def check_output(
        self, text: str, request: ChatCompletionRequest | None, principal: Principal | None
    ) -> Verdict:
        if not self.screen_output:
            return Verdict(decision="allow")
        return self._verdict(text)
