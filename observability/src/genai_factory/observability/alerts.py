"""Alert rules on spend (thresholds and rates of change) and where alerts go: webhook, log, store.

A rule watches one metric (cost, requests or tokens) of one attribution dimension (all, org,
team, user, key, model, route, feature) over a sliding window. ``threshold`` fires when the
window's total exceeds ``threshold``; ``rate_of_change`` fires when the window's total is at least
``threshold`` times the window before it. Each (rule, scope) fires at most once per cooldown.

Example:
    >>> rule = AlertRule(name="team-burn", kind="threshold", dimension="team", threshold=10)
    >>> rule.check(current=12.5, previous=3.0).startswith("cost_usd over 3600s is 12.5")
    True
    >>> rule.check(current=9.0, previous=3.0) is None
    True
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, runtime_checkable

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from genai_factory.observability.store import AlertRow, TelemetryStore

__all__ = [
    "Alert",
    "AlertNotifier",
    "AlertRule",
    "Dimension",
    "LogNotifier",
    "StoreNotifier",
    "WebhookNotifier",
    "deliver",
    "signature_ok",
]

Dimension = Literal["all", "org", "team", "user", "key", "model", "route", "feature"]

_log = logging.getLogger("genai_factory.observability.alerts")


class AlertRule(BaseModel):
    """One rule; ``value`` narrows it to a single scope (``team: search``), else every scope."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128)
    kind: Literal["threshold", "rate_of_change"]
    dimension: Dimension = "all"
    value: str | None = None
    metric: Literal["cost_usd", "requests", "tokens"] = "cost_usd"
    window_s: int = Field(default=3600, ge=60, le=7 * 24 * 3600)
    threshold: float = Field(gt=0)
    min_previous: float = Field(
        default=0.0, ge=0, description="rate rules ignore smaller baselines"
    )
    severity: Literal["info", "warning", "critical"] = "warning"
    cooldown_s: int = Field(default=3600, ge=0)

    def check(self, *, current: float, previous: float) -> str | None:
        """The alert message if the rule fires for these window totals, else None."""
        if self.kind == "threshold":
            if current > self.threshold:
                return (
                    f"{self.metric} over {self.window_s}s is {current:.6g},"
                    f" above the threshold {self.threshold:.6g}"
                )
            return None
        if previous > 0 and previous >= self.min_previous and current >= self.threshold * previous:
            return (
                f"{self.metric} over {self.window_s}s rose from {previous:.6g} to {current:.6g}"
                f" ({current / previous:.2f}x, limit {self.threshold:.2f}x)"
            )
        return None


class Alert(BaseModel):
    """A fired alert, as delivered to every notifier."""

    model_config = ConfigDict(extra="forbid")

    rule: str
    kind: str
    severity: str
    scope: str
    metric: str
    value: float
    threshold: float
    previous: float | None = None
    message: str
    fired_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


@runtime_checkable
class AlertNotifier(Protocol):
    async def notify(self, alert: Alert) -> None: ...


class LogNotifier:
    """Writes each alert as one structured WARNING log line."""

    def __init__(self, logger_name: str = "genai_factory.observability.alerts") -> None:
        self.logger_name = logger_name

    async def notify(self, alert: Alert) -> None:
        logging.getLogger(self.logger_name).warning(
            "alert %s fired for %s: %s",
            alert.rule,
            alert.scope,
            alert.message,
            extra={"alert": alert.model_dump(mode="json")},
        )


class StoreNotifier:
    """Keeps alerts in the telemetry store, where the console lists them."""

    def __init__(self, store: TelemetryStore) -> None:
        self.store = store

    async def notify(self, alert: Alert) -> None:
        row = AlertRow(
            ts_ns=int(alert.fired_at.timestamp() * 1e9),
            rule=alert.rule,
            kind=alert.kind,
            severity=alert.severity,
            scope=alert.scope,
            message=alert.message,
            value=alert.value,
            threshold=alert.threshold,
        )
        await asyncio.to_thread(self.store.write_alert, row)


class WebhookNotifier:
    """POSTs each alert as JSON; signs the body with HMAC-SHA256 when a secret is set.

    The signature header is ``x-gf-signature: sha256=<hex>`` over the exact body bytes, with a
    ``x-gf-timestamp`` the receiver should check for freshness. Failures are retried with
    backoff, then logged; they never raise into the code that recorded the spend.
    """

    def __init__(
        self,
        url: str,
        secret: SecretStr | str | None = None,
        timeout_s: float = 5.0,
        retries: int = 2,
        headers: dict[str, str] | None = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError("webhook url must be http(s)")
        self.url = url
        self.secret = SecretStr(secret) if isinstance(secret, str) else secret
        self.timeout_s = timeout_s
        self.retries = retries
        self.headers = dict(headers or {})
        self.delivered = 0
        self.failed = 0

    def to_params(self) -> dict[str, Any]:
        return {"url": self.url, "timeout_s": self.timeout_s, "retries": self.retries}

    def _signed_headers(self, body: bytes) -> dict[str, str]:
        headers = {"content-type": "application/json", **self.headers}
        if self.secret is not None:
            timestamp = str(int(time.time()))
            mac = hmac.new(
                self.secret.get_secret_value().encode(),
                timestamp.encode() + b"." + body,
                hashlib.sha256,
            )
            headers["x-gf-timestamp"] = timestamp
            headers["x-gf-signature"] = "sha256=" + mac.hexdigest()
        return headers

    async def notify(self, alert: Alert) -> None:
        body = json.dumps(
            {"source": "genai-factory", "type": "alert", "alert": alert.model_dump(mode="json")}
        ).encode()
        last_error = ""
        async with httpx.AsyncClient(timeout=self.timeout_s) as client:
            for attempt in range(self.retries + 1):
                try:
                    response = await client.post(
                        self.url, content=body, headers=self._signed_headers(body)
                    )
                    if response.status_code < 500:
                        response.raise_for_status()
                        self.delivered += 1
                        return
                except httpx.HTTPError as exc:
                    last_error = str(exc)
                else:
                    last_error = f"HTTP {response.status_code}"
                if attempt < self.retries:
                    await asyncio.sleep(0.2 * 2**attempt)
        self.failed += 1
        _log.warning("alert webhook delivery failed: %s", last_error, extra={"rule": alert.rule})


def signature_ok(secret: str, timestamp: str, body: bytes, signature: str) -> bool:
    """Check a webhook's ``x-gf-signature`` (for receivers, and for our tests)."""
    expected = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return hmac.compare_digest("sha256=" + expected.hexdigest(), signature)


async def deliver(alert: Alert, notifiers: Sequence[AlertNotifier]) -> None:
    """Send one alert to every notifier; one failing notifier does not stop the others."""
    results = await asyncio.gather(*(n.notify(alert) for n in notifiers), return_exceptions=True)
    for notifier, result in zip(notifiers, results, strict=True):
        if isinstance(result, BaseException):
            _log.warning("alert notifier %s failed: %s", type(notifier).__name__, result)
