"""The gateway's audit observer: one event per request summary, written in order, off the loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from genai_factory.security.audit import AuditLog
from genai_factory.security.encryption import AtRestCipher, Keyring, new_key_entry
from genai_factory.security.gateway_audit import GatewayAuditObserver, request_outcome
from genai_factory.shared.errors import ConfigError


@pytest.fixture
async def log(tmp_path: Path, remember_secret: Callable[..., None]) -> AsyncIterator[AuditLog]:
    key = new_key_entry("g1")
    remember_secret(key.split(":", 1)[1])
    audit = AuditLog(str(tmp_path / "audit.db"), cipher=AtRestCipher(keyring=Keyring.parse(key)))
    yield audit
    await audit.close()


def summary(status: int, **fields: Any) -> SimpleNamespace:
    values: dict[str, Any] = {
        "request_id": f"req-{status}",
        "operation": "chat",
        "model": "m",
        "status": status,
        "subject": "ann",
        "user_id": "u-ann",
        "org_id": "acme",
        "prompt_tokens": 12,
        "completion_tokens": 3,
        "cost_usd": "0.0001",
        "error_type": None,
    }
    values.update(fields)
    return SimpleNamespace(**values)


@given(st.integers(min_value=100, max_value=599))
def test_every_status_has_one_outcome(status: int) -> None:
    outcome = request_outcome(status)
    assert outcome in {"ok", "denied", "rejected", "cancelled", "error"}
    assert (outcome == "ok") == (status < 400)
    assert (outcome == "denied") == (status in (401, 403, 429))
    assert (outcome == "error") == (status >= 500)


async def test_events_are_written_in_order_and_chain(log: AuditLog) -> None:
    observer = GatewayAuditObserver(log)
    for status in (200, 401, 400, 429, 502, 499):
        observer.observe(summary(status, subject=None if status == 401 else "ann"))
    await observer.flush()
    events = await log.events()
    assert [(e.actor, e.outcome) for e in events] == [
        ("ann", "ok"),
        ("anonymous", "denied"),
        ("ann", "rejected"),
        ("ann", "denied"),
        ("ann", "error"),
        ("ann", "cancelled"),
    ]
    assert {(e.action, e.resource, e.user_id) for e in events} == {
        ("gateway.chat", "model:m", "u-ann")
    }
    first = events[0].payload
    assert first is not None
    assert first["request_id"] == "req-200" and first["prompt_tokens"] == 12
    assert "error_type" not in first  # absent fields stay out of the payload
    assert await log.verify() is None
    assert observer.recorded == 6 and observer.dropped == 0 and observer.failed == 0


async def test_only_denied_keeps_refusals_only(log: AuditLog) -> None:
    observer = GatewayAuditObserver(log, only_denied=True)
    for status in (200, 403, 400, 429):
        observer.observe(summary(status))
    await observer.flush()
    assert [e.outcome for e in await log.events()] == ["denied", "denied"]


async def test_a_full_queue_counts_what_it_drops(
    log: AuditLog, caplog: pytest.LogCaptureFixture
) -> None:
    observer = GatewayAuditObserver(log, max_pending=2)
    for _ in range(5):  # no await in between: the writer has not run yet
        observer.observe(summary(200))
    await observer.flush()
    assert observer.dropped == 3 and observer.recorded == 2
    assert "audit queue full" in caplog.text


async def test_a_failing_log_is_counted_and_the_gateway_goes_on(log: AuditLog) -> None:
    async def broken(**_: Any) -> int:
        raise OSError("disk full")

    observer = GatewayAuditObserver(log)
    log.record = broken  # type: ignore[method-assign]
    observer.observe(summary(200))
    observer.observe(summary(401))
    await observer.flush()
    assert observer.failed == 2 and observer.recorded == 0


def test_events_queued_without_a_loop_are_written_on_close(log: AuditLog, tmp_path: Path) -> None:
    observer = GatewayAuditObserver(log)
    observer.observe(summary(200))  # no running event loop here: stays queued

    async def close_and_read() -> list[str]:
        await observer.aclose()
        reopened = AuditLog(str(tmp_path / "audit.db"), cipher=log.cipher)
        try:
            return [e.outcome for e in await reopened.events()]
        finally:
            await reopened.close()

    assert asyncio.run(close_and_read()) == ["ok"]


def test_max_pending_must_be_positive(tmp_path: Path) -> None:
    cipher = AtRestCipher(keyring=Keyring.parse(new_key_entry("x1")))
    with pytest.raises(ConfigError, match="max_pending"):
        GatewayAuditObserver(AuditLog(str(tmp_path / "a.db"), cipher=cipher), max_pending=0)
