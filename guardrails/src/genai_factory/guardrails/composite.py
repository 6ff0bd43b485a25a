"""CompositeGuard: the one guard the gateway builds, made of the others.

Input: the content rate limiter first (a principal in cool-down is refused at once), then each
input guard in order on the request as the previous guards left it (rewrites accumulate), stopping
at the first block. Output: each output guard in order on the answer as the previous ones left it.
Every check is appended to the audit log. The verdict lists every finding and per-layer timings
(``guard.<Class>`` totals plus each guard's own layers, and ``guard.total``).

From config (the shared factory; every part is optional)::

    type: genai_factory.guardrails:CompositeGuard
    params:
      input_guards:
        - {type: genai_factory.guardrails.pii:PIIGuard, params: {block_entities: [SECRET]}}
        - {type: genai_factory.guardrails.injection:InjectionGuard}
        - {type: genai_factory.guardrails.policy:PolicyEngine, params: {path: policies.yaml}}
      output_guards:
        - {type: genai_factory.guardrails.injection:InjectionGuard, params: {layers: [normalize]}}
        - {type: genai_factory.guardrails.output:OutputGuard}
      rate_limiter: {type: genai_factory.guardrails.ratelimit:ContentRateLimiter}
      audit: {type: genai_factory.guardrails.audit:AuditLog, params: {url: "sqlite:///audit.db"}}

:meth:`CompositeGuard.default` builds the usual set with one shared embedding model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from genai_factory.guardrails.audit import AuditLog
from genai_factory.guardrails.base import (
    Decision,
    apply_input_verdict,
    combine,
    encode_rewrites,
)
from genai_factory.guardrails.embeddings import MiniLMEmbedder
from genai_factory.guardrails.injection.guard import InjectionGuard
from genai_factory.guardrails.output.guard import OutputGuard
from genai_factory.guardrails.output.moderation import LexiconModerator
from genai_factory.guardrails.pii.analyzer import PIIAnalyzer
from genai_factory.guardrails.pii.guard import PIIGuard
from genai_factory.guardrails.ratelimit import ContentRateLimiter
from genai_factory.guardrails.streaming import StreamingRail
from genai_factory.shared.contracts import Guard
from genai_factory.shared.errors import ServiceUnavailable
from genai_factory.shared.models import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    Finding,
    Principal,
    Verdict,
)

__all__ = ["CompositeGuard"]

log = logging.getLogger(__name__)


def _principal_key(principal: Principal | None) -> str:
    if principal is None:
        return "anonymous"
    return f"{principal.tenant}:{principal.subject}"


class CompositeGuard:
    """Runs input and output guards in order, with content rate limiting and an audit log.

    ``short_circuit`` stops at the first block (later guards never see blocked content);
    ``audit_required`` turns an audit write failure into ServiceUnavailable instead of a log line.
    """

    def __init__(
        self,
        input_guards: Sequence[Guard] = (),
        output_guards: Sequence[Guard] = (),
        rate_limiter: ContentRateLimiter | None = None,
        audit: AuditLog | None = None,
        short_circuit: bool = True,
        audit_required: bool = False,
    ) -> None:
        for guard in [*input_guards, *output_guards]:
            if not isinstance(guard, Guard):
                raise TypeError(f"{type(guard).__name__} does not implement Guard")
        self.input_guards = list(input_guards)
        self.output_guards = list(output_guards)
        self.rate_limiter = rate_limiter
        self.audit = audit
        self.short_circuit = short_circuit
        self.audit_required = audit_required

    @classmethod
    def default(
        cls,
        use_ner: bool = True,
        embedder: MiniLMEmbedder | None = None,
        audit: AuditLog | None = None,
        rate_limiter: ContentRateLimiter | None = None,
    ) -> CompositeGuard:
        """PII (rules + NER) and injection on input; canaries, moderation and PII on output."""
        shared = embedder if embedder is not None else MiniLMEmbedder()
        pii = PIIGuard(analyzer=PIIAnalyzer(use_ner=use_ner))
        injection = InjectionGuard(embedder=shared)
        return cls(
            input_guards=[pii, injection],
            output_guards=[injection, OutputGuard(), pii],
            rate_limiter=rate_limiter,
            audit=audit,
        )

    # ---------------------------------------------------------------------------- internals

    async def _audit(
        self,
        direction: str,
        verdict: Verdict,
        request: ChatCompletionRequest,
        principal: Principal | None,
        text: str,
    ) -> None:
        if self.audit is None:
            return
        event: dict[str, Any] = {
            "direction": direction,
            "decision": verdict.decision,
            "subject": principal.subject if principal else None,
            "tenant": principal.tenant if principal else None,
            "model": request.model,
            "route": (request.model_extra or {}).get("route"),
            "text_sha256": hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest(),
            "findings": [
                {"rule_id": f.rule_id, "category": f.category, "layer": f.layer, "score": f.score}
                for f in verdict.findings
            ],
            "total_ms": verdict.timings_ms.get("guard.total"),
        }
        try:
            await self.audit.append(event)
        except Exception as exc:
            if self.audit_required:
                raise ServiceUnavailable("the audit log is unavailable") from exc
            log.error("audit append failed: %s", type(exc).__name__)

    @staticmethod
    def _merge_timings(
        into: dict[str, float], name: str, verdict: Verdict, elapsed_ms: float
    ) -> None:
        for key, value in verdict.timings_ms.items():
            into[key] = into.get(key, 0.0) + value
        into[f"guard.{name}"] = into.get(f"guard.{name}", 0.0) + elapsed_ms

    # ----------------------------------------------------------------------------- contract

    async def check_input(
        self, request: ChatCompletionRequest, principal: Principal | None
    ) -> Verdict:
        started = time.perf_counter()
        timings: dict[str, float] = {}
        findings: list[Finding] = []
        decisions: list[Decision] = []
        key = _principal_key(principal)
        user_text = "\n".join(m.text() for m in request.messages if m.role == "user")
        if self.rate_limiter is not None:
            cooling = await self.rate_limiter.cooldown(key)
            if cooling is not None:
                finding = Finding(
                    rule_id="ratelimit.cooldown",
                    category="rate_limit",
                    layer="ratelimit",
                    message=f"{cooling.reason}: retry after {cooling.retry_after_s:.0f} s",
                )
                timings["guard.total"] = (time.perf_counter() - started) * 1000
                verdict = combine(["block"], [finding], timings)
                await self._audit("input", verdict, request, principal, user_text)
                return verdict
        current = request
        for guard in self.input_guards:
            guard_started = time.perf_counter()
            verdict = await guard.check_input(current, principal)
            self._merge_timings(
                timings, type(guard).__name__, verdict, (time.perf_counter() - guard_started) * 1000
            )
            findings += verdict.findings
            decisions.append(verdict.decision)
            if verdict.decision == "redact":
                current = apply_input_verdict(current, verdict)
            if verdict.decision == "block" and self.short_circuit:
                break
        decision: Decision = "block" if "block" in decisions else "allow"
        if decision != "block" and self.rate_limiter is not None:
            cooldown = await self.rate_limiter.record(key, user_text, blocked=False)
            if cooldown is not None:
                decision = "block"
                findings.append(
                    Finding(
                        rule_id=f"ratelimit.{cooldown.reason}",
                        category="rate_limit",
                        layer="ratelimit",
                        message=f"cool-down of {cooldown.retry_after_s:.0f} s started",
                    )
                )
        elif self.rate_limiter is not None:
            await self.rate_limiter.record(key, user_text, blocked=True)
        text: str | None = None
        if decision != "block":
            rewrites = {
                i: new.text()
                for i, (old, new) in enumerate(zip(request.messages, current.messages, strict=True))
                if old.text() != new.text()
            }
            if rewrites:
                decision = "redact"
                text = encode_rewrites(request, rewrites)
        timings["guard.total"] = (time.perf_counter() - started) * 1000
        verdict = combine([decision], findings, timings, text)
        await self._audit("input", verdict, request, principal, user_text)
        return verdict

    async def check_output(
        self, text: str, request: ChatCompletionRequest, principal: Principal | None
    ) -> Verdict:
        started = time.perf_counter()
        timings: dict[str, float] = {}
        findings: list[Finding] = []
        decisions: list[Decision] = []
        current = text
        for guard in self.output_guards:
            guard_started = time.perf_counter()
            verdict = await guard.check_output(current, request, principal)
            self._merge_timings(
                timings, type(guard).__name__, verdict, (time.perf_counter() - guard_started) * 1000
            )
            findings += verdict.findings
            decisions.append(verdict.decision)
            if verdict.decision == "redact" and verdict.text is not None:
                current = verdict.text
            if verdict.decision == "block" and self.short_circuit:
                break
        decision: Decision = "block" if "block" in decisions else "allow"
        if decision != "block" and current != text:
            decision = "redact"
        timings["guard.total"] = (time.perf_counter() - started) * 1000
        verdict = combine([decision], findings, timings, current)
        await self._audit("output", verdict, request, principal, text)
        return verdict

    # ------------------------------------------------------------------------------ streams

    def stream_rail(self, request: ChatCompletionRequest | None = None) -> StreamingRail:
        """A streaming rail that matches this guard's output side (moderation, canaries, PII)."""
        moderation: LexiconModerator | None = None
        canaries: list[str] = []
        anonymizer = None
        for guard in self.output_guards:
            if isinstance(guard, OutputGuard) and guard.moderation is not None:
                moderation = guard.moderation
            if isinstance(guard, InjectionGuard):
                canaries += guard.canaries
                if guard.plant_canary and request is not None:
                    canaries.append(guard.canary_for(request))
            if isinstance(guard, PIIGuard) and guard.anonymizer.action != "pseudonymize":
                anonymizer = guard.anonymizer
        return StreamingRail(anonymizer=anonymizer, moderation=moderation, canaries=canaries)

    async def guard_stream(
        self,
        chunks: AsyncIterator[ChatCompletionChunk],
        request: ChatCompletionRequest,
        principal: Principal | None,
    ) -> AsyncIterator[ChatCompletionChunk]:
        """Pass a chat completion stream through the streaming rail; raises Blocked to stop it."""
        rail = self.stream_rail(request)
        async for chunk in rail.stream_chunks(chunks):
            yield chunk
        if self.audit is not None:
            verdict = Verdict(
                decision="redact" if rail.detections else "allow",
                findings=rail.findings,
                timings_ms={"stream.scan": round(rail.scan_ms, 4)},
            )
            await self._audit("output_stream", verdict, request, principal, json.dumps(rail.chunks))
