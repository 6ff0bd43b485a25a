"""Structured JSON logging with request and trace ids, and a filter that redacts secrets.

Every record becomes one JSON line with ``ts``, ``level``, ``logger``, ``msg``, the current
``request_id`` and ``trace_id`` (from :func:`log_context`), and any ``extra`` fields. The
:class:`RedactionFilter` replaces known secret values and anything shaped like a credential
(bearer tokens, ``sk-...`` keys, passwords in URLs) before a handler sees the record.

Example:
    >>> import io, json, logging
    >>> from genai_factory.shared.logging import configure_logging, log_context
    >>> stream = io.StringIO()
    >>> logger = configure_logging(level="INFO", stream=stream, secrets=["hunter2"])
    >>> with log_context(request_id="req-1"):
    ...     logging.getLogger("genai_factory.demo").info("password is hunter2")
    >>> line = json.loads(stream.getvalue())
    >>> line["msg"], line["request_id"]
    ('password is [REDACTED]', 'req-1')
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any

__all__ = [
    "JSONFormatter",
    "RedactionFilter",
    "configure_logging",
    "current_request_id",
    "current_trace_id",
    "log_context",
]

ROOT_LOGGER = "genai_factory"

# Context variables are per-task state, not shared mutable globals: each asyncio task sees its own.
_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "gf_request_id", default=None
)
_trace_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("gf_trace_id", default=None)

REDACTED = "[REDACTED]"

# Shapes of credentials that must never reach a log line, even when nobody registered them.
_CREDENTIAL_PATTERNS: tuple[re.Pattern[str], ...] = (
    re.compile(r"(?i)\bbearer\s+[a-z0-9._~+/=-]{8,}"),
    re.compile(r"\b(?:sk|pk|rk|gf)-[A-Za-z0-9_-]{16,}"),
    re.compile(r"\bAKIA[0-9A-Z]{16}\b"),
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}\b"),
    re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}\b"),
    re.compile(r"(?i)(?<=://)[^/\s:@]+:[^/\s@]+(?=@)"),  # user:password@ in URLs
    re.compile(r"(?i)\b(?:api[_-]?key|password|secret|token)\s*[=:]\s*[^\s,;&]{6,}"),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----"),
)

_STD_ATTRS = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys()
) | {"message", "asctime", "taskName"}


def current_request_id() -> str | None:
    return _request_id.get()


def current_trace_id() -> str | None:
    return _trace_id.get()


@contextlib.contextmanager
def log_context(*, request_id: str | None = None, trace_id: str | None = None) -> Iterator[None]:
    """Attach ``request_id`` / ``trace_id`` to every log record emitted inside the block."""
    tokens: list[tuple[contextvars.ContextVar[str | None], contextvars.Token[str | None]]] = []
    if request_id is not None:
        tokens.append((_request_id, _request_id.set(request_id)))
    if trace_id is not None:
        tokens.append((_trace_id, _trace_id.set(trace_id)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


class RedactionFilter(logging.Filter):
    """Replaces registered secret values and credential-shaped strings in a record, in place."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        # Longest first so a secret containing another is replaced whole.
        self._secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        for pattern in _CREDENTIAL_PATTERNS:
            text = pattern.sub(REDACTED, text)
        return text

    def _redact_value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            return {key: self._redact_value(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [self._redact_value(item) for item in value]
        return value

    def filter(self, record: logging.LogRecord) -> bool:
        # Render the message once, redact it, and drop args so nothing re-renders the original.
        record.msg = self.redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        record.exc_info = None
        for key, value in list(vars(record).items()):
            if key not in _STD_ATTRS:
                setattr(record, key, self._redact_value(value))
        return True


class JSONFormatter(logging.Formatter):
    """One JSON object per line; extra fields are kept; ids come from :func:`log_context`."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id, trace_id = _request_id.get(), _trace_id.get()
        if request_id:
            payload["request_id"] = request_id
        if trace_id:
            payload["trace_id"] = trace_id
        for key, value in vars(record).items():
            if key not in _STD_ATTRS and key not in payload:
                payload[key] = value
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            payload["exc"] = record.exc_text
        return json.dumps(payload, default=str, ensure_ascii=False)


class _ConsoleFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ids = " ".join(
            f"{name}={value}"
            for name, value in (("request_id", _request_id.get()), ("trace_id", _trace_id.get()))
            if value
        )
        line = f"{record.levelname:<7} {record.name}: {record.getMessage()}"
        return f"{line} [{ids}]" if ids else line


def configure_logging(
    *,
    level: str = "INFO",
    fmt: str = "json",
    stream: IO[str] | None = None,
    secrets: Iterable[str] = (),
) -> logging.Logger:
    """Set up the ``genai_factory`` logger tree (not the root logger) and return it.

    Calling it again replaces the handler, so tests and CLIs can reconfigure freely.
    """
    logger = logging.getLogger(ROOT_LOGGER)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else _ConsoleFormatter())
    handler.addFilter(RedactionFilter(secrets))
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    logger.propagate = False
    return logger
