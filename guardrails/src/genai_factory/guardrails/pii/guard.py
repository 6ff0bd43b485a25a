"""PIIGuard: the PII layer behind the shared ``Guard`` contract.

On input it finds personal data and secrets in the conversation and rewrites them with the
anonymizer's action (or blocks, for entity types listed in ``block_entities``). With the
``pseudonymize`` action it keeps the request's :class:`PseudonymVault`, and on output it restores
the originals in the model's answer, after redacting any *new* personal data the model produced.

Example (rules only, so it runs without spaCy)::

    guard = PIIGuard(analyzer=PIIAnalyzer(use_ner=False), anonymizer=Anonymizer("pseudonymize"))
    verdict = await guard.check_input(request, None)     # "redact", text = JSON rewrites
    answer = await guard.check_output("Wrote to <EMAIL_ADDRESS_1>.", request, None)
    answer.text                                           # "Wrote to ann@example.org."
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from genai_factory.guardrails.base import (
    Decision,
    combine,
    encode_rewrites,
    request_key,
    request_segments,
    timed,
)
from genai_factory.guardrails.detection import Detection
from genai_factory.guardrails.pii.analyzer import PIIAnalyzer
from genai_factory.guardrails.pii.anonymizer import Anonymizer
from genai_factory.guardrails.pii.vault import PseudonymVault, VaultStore
from genai_factory.shared.models import ChatCompletionRequest, Finding, Principal, Verdict

__all__ = ["PIIGuard"]

Mode = Literal["redact", "detect", "block"]


def _category(detection: Detection) -> str:
    return "secret" if detection.entity_type == "SECRET" else "pii"


class PIIGuard:
    """Finds and rewrites personal data and secrets on the way in and out.

    ``mode``: ``redact`` rewrites, ``detect`` only reports, ``block`` refuses any hit.
    ``block_entities`` always block (e.g. ``["SECRET"]``). ``roles`` picks the messages scanned
    on input (system prompts are the operator's and are left alone by default).
    ``output_mode`` does the same for the model's answer.
    """

    def __init__(
        self,
        analyzer: PIIAnalyzer | None = None,
        anonymizer: Anonymizer | None = None,
        mode: Mode = "redact",
        output_mode: Mode = "redact",
        block_entities: Sequence[str] = (),
        roles: Sequence[str] = ("user", "assistant", "tool"),
        vault_ttl_s: float = 600.0,
    ) -> None:
        self.analyzer = analyzer if analyzer is not None else PIIAnalyzer()
        self.anonymizer = anonymizer if anonymizer is not None else Anonymizer()
        self.mode: Mode = mode
        self.output_mode: Mode = output_mode
        self.block_entities = list(block_entities)
        self.roles = list(roles)
        self.vault_ttl_s = vault_ttl_s
        self._vaults = VaultStore(ttl_s=vault_ttl_s)
        # an output can only be rewritten by an action that needs no vault
        self._output_anonymizer = (
            Anonymizer("redact", mask_char=self.anonymizer.mask_char)
            if self.anonymizer.action == "pseudonymize"
            else self.anonymizer
        )

    def _decide(self, detections: Sequence[Detection], mode: Mode) -> Decision:
        if not detections:
            return "allow"
        if mode == "block" or any(d.entity_type in self.block_entities for d in detections):
            return "block"
        return "allow" if mode == "detect" else "redact"

    def vault_for(self, request: ChatCompletionRequest) -> PseudonymVault | None:
        """The vault the input check kept for this conversation, if any."""
        return self._vaults.get(request_key(request))

    async def check_input(
        self, request: ChatCompletionRequest, principal: Principal | None
    ) -> Verdict:
        timings: dict[str, float] = {}
        findings: list[Finding] = []
        rewrites: dict[int, str] = {}
        all_hits: list[Detection] = []
        vault = PseudonymVault()
        for segment in request_segments(request, self.roles):
            result = self.analyzer.analyze(segment.text)
            for name, value in result.timings_ms.items():
                timings[name] = timings.get(name, 0.0) + value
            if not result.detections:
                continue
            all_hits += result.detections
            findings += [
                d.to_finding(_category(d), f"{d.entity_type} in message {segment.index}")
                for d in result.detections
            ]
            with timed(timings, "pii.anonymize"):
                rewrites[segment.index] = self.anonymizer.anonymize(
                    segment.text, result.detections, vault
                ).text
        decision = self._decide(all_hits, self.mode)
        if decision == "redact" and len(vault):
            self._vaults.put(request_key(request), vault)
            rewritten = request.model_copy(
                update={
                    "messages": [
                        m if i not in rewrites else m.model_copy(update={"content": rewrites[i]})
                        for i, m in enumerate(request.messages)
                    ]
                }
            )
            self._vaults.put(request_key(rewritten), vault)
        text = encode_rewrites(request, rewrites) if decision == "redact" else None
        return combine([decision], findings, timings, text)

    async def check_output(
        self, text: str, request: ChatCompletionRequest, principal: Principal | None
    ) -> Verdict:
        timings: dict[str, float] = {}
        vault = self.vault_for(request)
        result = self.analyzer.analyze(text)
        timings.update(result.timings_ms)
        detections = result.detections
        if vault is not None:
            # the vault's own placeholders are not leaks: they are restored below
            spans = vault.placeholder_spans(text)
            detections = [
                d for d in detections if not any(d.start < e and s < d.end for s, e in spans)
            ]
        findings = [
            d.to_finding(_category(d), f"{d.entity_type} in the answer") for d in detections
        ]
        decision = self._decide(detections, self.output_mode)
        new_text = text
        if decision == "redact":
            with timed(timings, "pii.anonymize"):
                new_text = self._output_anonymizer.anonymize(text, detections).text
        if vault is not None and decision != "block":
            with timed(timings, "pii.restore"):
                restored = vault.restore(new_text)
            if restored != text:
                decision = "redact"
            new_text = restored
        return combine([decision], findings, timings, new_text)
