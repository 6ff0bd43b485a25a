"""W3C Trace Context (``traceparent``) parsing and formatting, with no OpenTelemetry dependency.

Example:
    >>> from genai_factory.shared.tracecontext import TraceContext
    >>> ctx = TraceContext.parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    >>> ctx.trace_id, ctx.sampled
    ('4bf92f3577b34da6a3ce929d0e0e4736', True)
    >>> ctx.child().trace_id == ctx.trace_id
    True
"""

from __future__ import annotations

import re
import secrets

from pydantic import BaseModel, ConfigDict, Field

from genai_factory.shared.errors import ValidationError

__all__ = ["TraceContext"]

_TRACEPARENT = re.compile(
    r"^(?P<version>[0-9a-f]{2})-(?P<trace>[0-9a-f]{32})-(?P<span>[0-9a-f]{16})-(?P<flags>[0-9a-f]{2})"
    r"(?P<rest>-.*)?$"
)


class TraceContext(BaseModel):
    """A trace id, the current span id and the sampled flag, as carried by ``traceparent``."""

    model_config = ConfigDict(frozen=True)

    trace_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    span_id: str = Field(pattern=r"^[0-9a-f]{16}$")
    flags: int = Field(default=1, ge=0, le=255)

    @property
    def sampled(self) -> bool:
        return bool(self.flags & 0x01)

    @classmethod
    def new(cls, *, sampled: bool = True) -> TraceContext:
        """A fresh root context with random ids."""
        return cls(trace_id=secrets.token_hex(16), span_id=secrets.token_hex(8), flags=int(sampled))

    def child(self) -> TraceContext:
        """The same trace with a new span id (for an outgoing call)."""
        return TraceContext(trace_id=self.trace_id, span_id=secrets.token_hex(8), flags=self.flags)

    @classmethod
    def parse(cls, header: str) -> TraceContext:
        """Parse a ``traceparent`` header; raise ValidationError if it is not valid.

        Follows the spec: version ``ff`` and all-zero ids are invalid; a future version may carry
        extra fields after the four known ones.
        """
        match = _TRACEPARENT.match(header.strip().lower()) if len(header) <= 512 else None
        if match is None:
            raise ValidationError("malformed traceparent header", param="traceparent")
        version, trace_id, span_id = match["version"], match["trace"], match["span"]
        if version == "ff" or (version == "00" and match["rest"]):
            raise ValidationError("unsupported traceparent version", param="traceparent")
        if trace_id == "0" * 32 or span_id == "0" * 16:
            raise ValidationError("traceparent ids must not be all zero", param="traceparent")
        return cls(trace_id=trace_id, span_id=span_id, flags=int(match["flags"], 16))

    @classmethod
    def from_headers(cls, headers: dict[str, str]) -> TraceContext | None:
        """The context in ``headers`` (case-insensitive), or None when absent or invalid."""
        for name, value in headers.items():
            if name.lower() == "traceparent":
                try:
                    return cls.parse(value)
                except ValidationError:
                    return None
        return None

    def to_header(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{self.flags:02x}"
