"""The streaming output rail: redact a stream chunk by chunk, even when an entity is split.

The rail holds back the last ``holdback_chars`` characters of what it has received. An entity no
longer than the hold-back is therefore whole in the buffer before its first character could be
released, whatever the chunking. A detected span that reaches into the held-back tail keeps the
rest of the span back too; an unterminated PEM block is held until its END line (up to
``max_buffer_chars``). The last ``context_chars`` already released stay as left context, so
context words ("born on", "SSN") still count. Moderation and canary leaks stop the stream.

Added latency is the hold-back (characters, not time: a few tokens) plus one rules scan of the
small buffer per chunk, well under a millisecond without NER.

Example:
    >>> rail = StreamingRail()
    >>> pieces = [rail.feed(c) for c in ["Mail ann@exa", "mple.org now, ", "thanks!"]]
    >>> "".join(pieces) + rail.flush()
    'Mail [EMAIL_ADDRESS] now, thanks!'
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence

from genai_factory.guardrails.detection import Detection
from genai_factory.guardrails.injection.canary import CanaryTokens
from genai_factory.guardrails.output.moderation import LexiconModerator
from genai_factory.guardrails.pii.analyzer import PIIAnalyzer
from genai_factory.guardrails.pii.anonymizer import Anonymizer
from genai_factory.shared.errors import Blocked
from genai_factory.shared.models import ChatCompletionChunk, Finding

__all__ = ["StreamingRail"]

_PEM_BEGIN = "-----BEGIN"
_PEM_END = "-----END"


class StreamingRail:
    """Stateful, one per stream: ``feed`` each chunk, then ``flush`` at the end.

    ``analyzer`` defaults to the rule recognisers only (NER per chunk would cost milliseconds);
    ``anonymizer`` must not be ``pseudonymize`` (there is no vault on the way out).
    """

    def __init__(
        self,
        analyzer: PIIAnalyzer | None = None,
        anonymizer: Anonymizer | None = None,
        holdback_chars: int = 64,
        context_chars: int = 48,
        max_buffer_chars: int = 8192,
        moderation: LexiconModerator | None = None,
        canaries: Sequence[str] = (),
    ) -> None:
        if holdback_chars < 1 or context_chars < 0 or max_buffer_chars <= holdback_chars:
            raise ValueError("need holdback_chars >= 1, context_chars >= 0, max_buffer > holdback")
        self.analyzer = analyzer if analyzer is not None else PIIAnalyzer(use_ner=False)
        self.anonymizer = anonymizer if anonymizer is not None else Anonymizer("redact")
        if self.anonymizer.action == "pseudonymize":
            raise ValueError("a stream cannot pseudonymise: use redact, mask, hash or fake")
        self.holdback_chars = holdback_chars
        self.context_chars = context_chars
        self.max_buffer_chars = max_buffer_chars
        self.moderation = moderation
        self.canaries = list(canaries)
        self._canary = CanaryTokens()
        self._context = ""  # released text kept for context words
        self._pending = ""  # received, not yet released
        self._released = 0  # characters of the original stream released so far
        self.detections: list[Detection] = []
        self.findings: list[Finding] = []
        self.blocked = False
        self.scan_ms = 0.0
        self.chunks = 0

    def _stop_words(self, text: str) -> list[Finding]:
        found: list[Finding] = []
        if self.moderation is not None:
            found += self.moderation.findings(text)
        if self.canaries:
            found += self._canary.leaks(text, self.canaries)
        return found

    def _release(self, final: bool) -> str:
        started = time.perf_counter()
        scan_text = self._context + self._pending
        offset = len(self._context)
        stops = self._stop_words(scan_text)
        if stops:
            self.blocked = True
            self.findings += stops
            self._pending = ""
            self.scan_ms += (time.perf_counter() - started) * 1000
            return ""
        detections = [
            d.shifted(-offset)
            for d in self.analyzer.analyze(scan_text).detections
            if d.end > offset
        ]
        boundary = len(self._pending) if final else max(0, len(self._pending) - self.holdback_chars)
        if not final:
            begin = self._pending.rfind(_PEM_BEGIN)
            if begin >= 0 and self._pending.find(_PEM_END, begin) < 0:
                boundary = min(boundary, begin)  # an open private key: hold it whole
            for d in detections:
                if d.start < boundary < d.end:
                    boundary = d.start
            if len(self._pending) > self.max_buffer_chars:
                boundary = max(boundary, len(self._pending) - self.max_buffer_chars)
        done = [d for d in detections if d.end <= boundary and d.start >= 0]
        head = [d for d in detections if d.start < 0 < d.end]  # began in released text
        for d in head:
            done.append(Detection(d.entity_type, 0, d.end, d.score, d.rule_id, d.layer, ""))
        out = self.anonymizer.anonymize(self._pending[:boundary], done).text
        for d in done:
            self.detections.append(d.shifted(self._released))
            self.findings.append(
                d.shifted(self._released).to_finding(
                    "secret" if d.entity_type == "SECRET" else "pii",
                    f"{d.entity_type} in the stream",
                )
            )
        self._released += boundary
        self._context = (
            (self._context + self._pending[:boundary])[-self.context_chars :]
            if self.context_chars
            else ""
        )
        self._pending = self._pending[boundary:]
        self.scan_ms += (time.perf_counter() - started) * 1000
        return out

    def feed(self, chunk: str) -> str:
        """Take one chunk; return the text that is safe to send now (maybe empty)."""
        if self.blocked:
            return ""
        self.chunks += 1
        self._pending += chunk
        if len(self._pending) <= self.holdback_chars:
            return ""
        return self._release(final=False)

    def flush(self) -> str:
        """The end of the stream: release everything left, redacted."""
        if self.blocked or not self._pending:
            return ""
        return self._release(final=True)

    async def stream_text(self, chunks: AsyncIterator[str]) -> AsyncIterator[str]:
        """Redact an async stream of text; raises Blocked if the stream must stop."""
        async for chunk in chunks:
            out = self.feed(chunk)
            if self.blocked:
                raise Blocked("the answer was stopped by the output rail", findings=self._dumped())
            if out:
                yield out
        tail = self.flush()
        if self.blocked:
            raise Blocked("the answer was stopped by the output rail", findings=self._dumped())
        if tail:
            yield tail

    async def stream_chunks(
        self, chunks: AsyncIterator[ChatCompletionChunk]
    ) -> AsyncIterator[ChatCompletionChunk]:
        """Redact the ``delta.content`` of a chat completion stream (first choice).

        Chunks whose text is held back are passed on with empty content, so role, tool-call and
        usage chunks keep their order; the held-back text comes out with the final chunk.
        """
        last: ChatCompletionChunk | None = None
        async for chunk in chunks:
            text = "".join(c.delta.content or "" for c in chunk.choices[:1])
            finished = any(c.finish_reason for c in chunk.choices)
            out = self.feed(text) if text else ""
            if finished:
                out += self.flush()
            if self.blocked:
                raise Blocked("the answer was stopped by the output rail", findings=self._dumped())
            last = chunk
            yield self._with_content(chunk, out)
        tail = self.flush()
        if self.blocked:
            raise Blocked("the answer was stopped by the output rail", findings=self._dumped())
        if tail and last is not None:
            yield self._with_content(last.model_copy(update={"choices": []}), tail, fresh=True)

    @staticmethod
    def _with_content(
        chunk: ChatCompletionChunk, text: str, fresh: bool = False
    ) -> ChatCompletionChunk:
        from genai_factory.shared.models import ChunkChoice, ChunkDelta

        if fresh:
            return chunk.model_copy(
                update={"choices": [ChunkChoice(delta=ChunkDelta(content=text))], "usage": None}
            )
        if not chunk.choices:
            return chunk
        first = chunk.choices[0]
        delta = first.delta.model_copy(
            update={"content": text if (text or first.delta.content) else first.delta.content}
        )
        return chunk.model_copy(
            update={"choices": [first.model_copy(update={"delta": delta}), *chunk.choices[1:]]}
        )

    def _dumped(self) -> list[dict[str, object]]:
        return [f.model_dump(mode="json") for f in self.findings]
