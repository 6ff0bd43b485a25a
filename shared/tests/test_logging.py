from __future__ import annotations

import io
import json
import logging
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from genai_factory.shared.logging import (
    RedactionFilter,
    configure_logging,
    current_request_id,
    log_context,
)


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


@pytest.fixture
def stream() -> io.StringIO:
    out = io.StringIO()
    configure_logging(level="DEBUG", stream=out, secrets=["hunter2-secret"])
    return out


def test_one_json_object_per_line_with_ids_and_extra_fields(stream: io.StringIO) -> None:
    log = logging.getLogger("genai_factory.test")
    with log_context(request_id="req-9", trace_id="abc123"):
        log.info("served %s", "smollm2", extra={"tokens": 12, "route": "/v1/chat"})
        assert current_request_id() == "req-9"
    log.warning("outside")
    first, second = lines(stream)
    assert first["msg"] == "served smollm2"
    assert first["request_id"] == "req-9" and first["trace_id"] == "abc123"
    assert first["tokens"] == 12 and first["route"] == "/v1/chat"
    assert first["level"] == "INFO" and first["ts"].endswith("Z")
    assert "request_id" not in second
    assert current_request_id() is None


@pytest.mark.parametrize(
    "leak",
    [
        "hunter2-secret",
        "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abc",
        "key sk-proj-abcdefghijklmnop1234",
        "aws AKIAABCDEFGHIJKLMNOP",
        "redis://user:p4ssw0rd@host:6379",
        "api_key=abcdef123456",
        "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----",
    ],
)
def test_secrets_are_redacted_in_messages_args_extras_and_tracebacks(
    stream: io.StringIO, leak: str
) -> None:
    log = logging.getLogger("genai_factory.test")
    log.info("message %s", leak, extra={"payload": {"nested": [leak]}})
    try:
        raise RuntimeError(leak)
    except RuntimeError:
        log.exception("failed")
    text = stream.getvalue()
    for fragment in (
        "hunter2-secret",
        "eyJzdWIi",
        "abcdefghijklmnop1234",
        "AKIAABCDEFGHIJKLMNOP",
        "p4ssw0rd",
        "abcdef123456",
        "MIIE",
    ):
        assert fragment not in text
    assert "[REDACTED]" in text
    assert len(lines(stream)) == 2


def test_console_format_and_level(stream: io.StringIO) -> None:
    out = io.StringIO()
    configure_logging(level="WARNING", fmt="console", stream=out)
    log = logging.getLogger("genai_factory.test")
    log.info("hidden")
    with log_context(request_id="r1"):
        log.warning("shown")
    assert out.getvalue().strip() == "WARNING genai_factory.test: shown [request_id=r1]"


@given(
    st.text(min_size=8, max_size=40, alphabet=st.characters(codec="ascii", categories=["L", "N"])),
    st.text(max_size=40),
    st.text(max_size=40),
)
def test_a_registered_secret_never_survives_redaction(secret: str, before: str, after: str) -> None:
    redacted = RedactionFilter([secret]).redact(before + secret + after)
    assert secret not in redacted
