"""JSON logs carry trace/span ids; secrets and personal data never reach a log line or a span."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider

from genai_factory.observability.logs import configure_observability_logging, request_log_context
from genai_factory.observability.redaction import ContentRedactor, PIIRedactionFilter

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """configure_logging owns the genai_factory logger; give it back to pytest afterwards."""
    logger = logging.getLogger("genai_factory")
    yield
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    logger.propagate = True
    logger.setLevel(logging.NOTSET)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_log_lines_carry_the_current_trace_and_span_and_the_request_id() -> None:
    stream = io.StringIO()
    configure_observability_logging(stream=stream, secrets=["hunter2-secret"])
    log = logging.getLogger("genai_factory.test")
    tracer = TracerProvider().get_tracer("t")
    with tracer.start_as_current_span("request") as span, request_log_context("req-1"):
        log.info(
            "calling upstream with hunter2-secret for %s",
            "ann@example.org",
            extra={"phone": "+44 20 7946 0958"},
        )
    log.info("outside")
    inside, outside = lines(stream)
    ctx = span.get_span_context()
    assert inside["trace_id"] == format(ctx.trace_id, "032x")
    assert inside["span_id"] == format(ctx.span_id, "016x")
    assert inside["request_id"] == "req-1"
    assert inside["msg"] == "calling upstream with [REDACTED] for [EMAIL]"
    assert inside["phone"] == "[PHONE]"
    assert "trace_id" not in outside and "span_id" not in outside


def test_pii_masking_can_be_turned_off_but_secrets_stay_masked() -> None:
    stream = io.StringIO()
    configure_observability_logging(stream=stream, secrets=["hunter2-secret"], pii=False)
    logging.getLogger("genai_factory.test").info("ann@example.org hunter2-secret")
    assert lines(stream)[0]["msg"] == "ann@example.org [REDACTED]"


def test_the_pii_filter_works_on_any_logger() -> None:
    record = logging.LogRecord("x", logging.INFO, "f", 1, "card %s", ("4111-1111-1111-1111",), None)
    record.user = "bob@example.com"
    assert PIIRedactionFilter().filter(record)
    assert record.getMessage() == "card [CARD]" and record.user == "[EMAIL]"


def test_redactor_keeps_ordinary_numbers_and_ids() -> None:
    redact = ContentRedactor()
    text = "order 1234567890123 on 2024-01-02 12:30 v1.45.2 trace 4bf92f3577b34da6a3ce929d0e0e4736"
    assert redact(text) == text
    assert redact("card 4111111111111112") == "card 4111111111111112"  # fails the Luhn check
    assert redact("ip 192.168.10.7 tel +1 (415) 555-0132") == "ip [IP] tel [PHONE]"
    assert ContentRedactor(pii=False)("bob@example.com") == "bob@example.com"
    assert ContentRedactor(secrets=["s3cr3t-value"]).to_params() == {"pii": True}


_local = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._", min_size=1, max_size=20).filter(
    lambda s: s[0].isalnum() and s[-1].isalnum() and ".." not in s
)


@given(
    st.text(max_size=60),
    _local,
    st.sampled_from(["example.com", "mail.example.org", "corp.io"]),
    st.text(max_size=60),
)
def test_an_email_anywhere_in_text_never_survives(
    before: str, user: str, domain: str, after: str
) -> None:
    email = f"{user}@{domain}"
    out = ContentRedactor()(f"{before} {email} {after}")
    assert email not in out


@given(st.text(max_size=200))
def test_redaction_is_idempotent(text: str) -> None:
    redact = ContentRedactor(secrets=["topsecretvalue"])
    once = redact(text)
    assert redact(once) == once
    assert "topsecretvalue" not in once
