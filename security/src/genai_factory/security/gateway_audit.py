"""The gateway's audit trail: one tamper-evident audit event per request, denials included.

:class:`GatewayAuditObserver` is a gateway request observer (``observers:`` in the gateway's
config): the gateway hands it every finished request's summary (ids, caller, model, status, tokens,
cost; never message content), and it appends an event to an :class:`~.audit.AuditLog`: who
(``actor``: the caller's subject), did what (``action``: ``gateway.chat``, ``gateway.completion``,
``gateway.embedding``), to what (``resource``: ``model:NAME``), with what outcome (``ok``,
``denied`` for 401/403/429, ``rejected`` for other client errors, ``error``, ``cancelled``).

The gateway calls observers inline on its event loop, so the observer only queues the event; one
background task writes the queue to the log in order (each event an fsync'd, hash-chained
commit). Closing the observer (the gateway does on shutdown) writes what is queued first.

Example:
    >>> import asyncio, tempfile, pathlib
    >>> from types import SimpleNamespace
    >>> from genai_factory.security.audit import AuditLog
    >>> from genai_factory.security.encryption import AtRestCipher, Keyring, new_key_entry
    >>> async def demo() -> list[tuple[str, str, str]]:
    ...     with tempfile.TemporaryDirectory() as tmp:
    ...         log = AuditLog(str(pathlib.Path(tmp) / "audit.db"),
    ...                        cipher=AtRestCipher(keyring=Keyring.parse(new_key_entry("a1"))))
    ...         observer = GatewayAuditObserver(log)
    ...         observer.observe(SimpleNamespace(request_id="r1", operation="chat",
    ...             model="gpt-4o-mini", status=403, subject="key:k1", user_id="u1"))
    ...         await observer.aclose()
    ...         log = AuditLog(str(pathlib.Path(tmp) / "audit.db"), cipher=log.cipher)
    ...         events = await log.events()
    ...         await log.close()
    ...         return [(e.actor, e.action, e.outcome) for e in events]
    >>> asyncio.run(demo())
    [('key:k1', 'gateway.chat', 'denied')]
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

from genai_factory.security.audit import AuditLog
from genai_factory.shared.errors import ConfigError

__all__ = ["GatewayAuditObserver", "request_outcome"]

logger = logging.getLogger("genai_factory.security.gateway_audit")

# what a request summary may carry into the payload (no message content ever reaches it)
_PAYLOAD_FIELDS = (
    "request_id",
    "status",
    "error_type",
    "stream",
    "deployment",
    "provider",
    "org_id",
    "team_id",
    "cache_hit",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
)


def request_outcome(status: int) -> str:
    """The audit outcome of a request's HTTP status.

    Examples:
        >>> [request_outcome(s) for s in (200, 401, 403, 429, 400, 499, 502)]
        ['ok', 'denied', 'denied', 'denied', 'rejected', 'cancelled', 'error']
    """
    if status < 400:
        return "ok"
    if status in (401, 403, 429):
        return "denied"
    if status == 499:  # the client went away
        return "cancelled"
    if status < 500:
        return "rejected"
    return "error"


class GatewayAuditObserver:
    """Writes one audit event per gateway request to ``log``.

    Args:
        log: the audit log the events go to.
        only_denied: record only requests that were refused (401, 403, 429) instead of all.
        max_pending: events queued at most while the log is being written; past it, new events
            are counted in ``dropped`` and logged as an error rather than held without bound.
    """

    def __init__(self, log: AuditLog, only_denied: bool = False, max_pending: int = 10_000) -> None:
        if max_pending < 1:
            raise ConfigError("'max_pending' must be at least 1", param="max_pending")
        self.log = log
        self.only_denied = only_denied
        self.max_pending = max_pending
        self.recorded = 0
        self.dropped = 0
        self.failed = 0
        self._pending: deque[dict[str, Any]] = deque()
        self._writer: asyncio.Task[None] | None = None

    def to_params(self) -> dict[str, Any]:
        return {"only_denied": self.only_denied, "max_pending": self.max_pending}

    def observe(self, summary: Any) -> None:
        """Queue the audit event of one finished request (called inline by the gateway)."""
        status = int(summary.status)
        outcome = request_outcome(status)
        if self.only_denied and outcome != "denied":
            return
        if len(self._pending) >= self.max_pending:
            self.dropped += 1
            logger.error(
                "audit queue full (%d events): an audit event was dropped", self.max_pending
            )
            return
        payload = {
            name: getattr(summary, name)
            for name in _PAYLOAD_FIELDS
            if getattr(summary, name, None) is not None
        }
        self._pending.append(
            {
                "actor": getattr(summary, "subject", None) or "anonymous",
                "action": f"gateway.{summary.operation}",
                "resource": f"model:{summary.model}",
                "outcome": outcome,
                "user_id": getattr(summary, "user_id", None),
                "payload": payload,
            }
        )
        if self._writer is None or self._writer.done():
            try:
                self._writer = asyncio.get_running_loop().create_task(self._write())
            except RuntimeError:  # no event loop: the event stays queued for flush()/aclose()
                self._writer = None

    async def _write(self) -> None:
        while self._pending:
            event = self._pending[0]
            try:
                await self.log.record(**event)
                self.recorded += 1
            except Exception as exc:  # a full or locked disk must not take the gateway down
                self.failed += 1
                logger.error("could not write an audit event: %s: %s", type(exc).__name__, exc)
            self._pending.popleft()

    async def flush(self) -> None:
        """Wait until every queued event is written."""
        while self._writer is not None and not self._writer.done():
            await asyncio.shield(self._writer)
        if self._pending:  # queued where no event loop ran
            await self._write()

    async def aclose(self) -> None:
        """Write what is queued, then close the log."""
        await self.flush()
        await self.log.close()
