"""Pieces every guard in this package shares: what to scan in a request, and how verdicts combine.

Input verdicts that rewrite (``decision == "redact"``) carry the new conversation in
``Verdict.text`` as a JSON array with one entry per request message: the message's new text, or
``null`` where the message is unchanged. :func:`apply_input_verdict` applies it; a gateway that
cannot import this package does the same in three lines (see the README).

Examples:
    >>> from genai_factory.shared.models import ChatCompletionRequest
    >>> request = ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "hi"}])
    >>> [(s.index, s.role, s.text) for s in request_segments(request)]
    [(0, 'user', 'hi')]
    >>> verdict = Verdict(decision="redact", text='["[EMAIL_ADDRESS]"]')
    >>> apply_input_verdict(request, verdict).messages[0].content
    '[EMAIL_ADDRESS]'
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from genai_factory.shared.models import ChatCompletionRequest, Finding, Verdict

__all__ = [
    "DECISION_RANK",
    "Segment",
    "apply_input_verdict",
    "combine",
    "document_texts",
    "encode_rewrites",
    "request_key",
    "request_segments",
    "timed",
]

Decision = Literal["allow", "redact", "block"]
DECISION_RANK: dict[str, int] = {"allow": 0, "redact": 1, "block": 2}


@dataclass(frozen=True, slots=True)
class Segment:
    """One text a guard scans: a message (``index`` >= 0) or a retrieved document (``index`` < 0)."""

    index: int
    role: str
    text: str
    source: Literal["message", "document"] = "message"

    @property
    def untrusted_data(self) -> bool:
        """Tool output and retrieved documents: data that may carry indirect injections."""
        return self.source == "document" or self.role in {"tool", "function"}


def document_texts(request: ChatCompletionRequest) -> list[str]:
    """Texts in the request's extra ``documents`` field (strings, or objects with ``text``/``content``)."""
    extra = request.model_extra or {}
    documents = extra.get("documents")
    if not isinstance(documents, list):
        return []
    texts: list[str] = []
    for item in documents:
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, dict):
            value = item.get("text", item.get("content"))
            if isinstance(value, str):
                texts.append(value)
    return texts


def request_segments(
    request: ChatCompletionRequest,
    roles: Sequence[str] | None = None,
    include_documents: bool = False,
) -> list[Segment]:
    """The texts of ``request`` to scan: its messages (of ``roles``, or all) and its documents."""
    segments = [
        Segment(index, message.role, message.text())
        for index, message in enumerate(request.messages)
        if (roles is None or message.role in roles) and message.text()
    ]
    if include_documents:
        segments += [
            Segment(-1 - i, "document", text, "document")
            for i, text in enumerate(document_texts(request))
            if text
        ]
    return segments


def request_key(request: ChatCompletionRequest) -> str:
    """A stable key for a conversation (model + messages), to find its state at output time."""
    payload = json.dumps(
        [request.model, [(m.role, m.text()) for m in request.messages]],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode("utf-8", "surrogatepass")).hexdigest()


def encode_rewrites(request: ChatCompletionRequest, rewrites: dict[int, str]) -> str:
    """``Verdict.text`` for an input rewrite: one entry per message, null where unchanged."""
    return json.dumps([rewrites.get(i) for i in range(len(request.messages))], ensure_ascii=False)


def apply_input_verdict(request: ChatCompletionRequest, verdict: Verdict) -> ChatCompletionRequest:
    """The request the model should see after ``verdict`` (unchanged unless it redacts)."""
    if verdict.decision != "redact" or verdict.text is None:
        return request
    rewrites: Any = json.loads(verdict.text)
    if not isinstance(rewrites, list) or len(rewrites) != len(request.messages):
        raise ValueError("an input verdict's text must list one entry per message")
    messages = [
        message if new is None else message.model_copy(update={"content": new})
        for message, new in zip(request.messages, rewrites, strict=True)
    ]
    return request.model_copy(update={"messages": messages})


def combine(
    decisions: Sequence[Decision],
    findings: Sequence[Finding],
    timings_ms: dict[str, float],
    text: str | None = None,
) -> Verdict:
    """One verdict from several: the strictest decision wins; findings and timings add up."""
    decision: Decision = max(decisions, key=DECISION_RANK.__getitem__, default="allow")
    return Verdict(
        decision=decision,
        findings=list(findings),
        text=text if decision == "redact" else None,
        timings_ms={k: round(v, 4) for k, v in timings_ms.items()},
    )


@contextmanager
def timed(timings_ms: dict[str, float], name: str) -> Iterator[None]:
    """Add the block's wall time in milliseconds to ``timings_ms[name]``."""
    started = time.perf_counter()
    try:
        yield
    finally:
        timings_ms[name] = timings_ms.get(name, 0.0) + (time.perf_counter() - started) * 1000
