"""Compliance: retention policies and the right to erasure across every store that holds data.

Each store that keeps personal or time-bound data registers one callable with each registry:

* :class:`RetentionManager` — ``purge(cutoff_epoch_s) -> deleted count`` with the store's
  maximum age; :meth:`RetentionManager.run` deletes everything older than each store's limit.
* :class:`ErasureRegistry` — ``erase(user_id) -> deleted count``; :meth:`ErasureRegistry.erase`
  calls every store, carries on past a failing one, and returns a report saying what was
  deleted where and whether the erasure is complete.

Stores register callables rather than being imported, so a module never depends on another: the
gateway wires, for example, the API key store's ``delete_for_user`` and
``purge_inactive_before`` at start-up. Reports and log lines identify the user by a
pseudonymous digest, so the erasure log itself holds no personal data.

Example:
    >>> import asyncio
    >>> from genai_factory.security.compliance import ErasureRegistry
    >>> rows = {"alice": 3, "bob": 1}
    >>> async def erase_chats(user_id: str) -> int:
    ...     return rows.pop(user_id, 0)
    >>> registry = ErasureRegistry()
    >>> registry.register("chats", erase_chats)
    >>> report = asyncio.run(registry.erase("alice"))
    >>> report.deleted, report.complete
    ({'chats': 3}, True)
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from genai_factory.shared.errors import ConfigError, Conflict, GFError, ValidationError

__all__ = [
    "ErasureRegistry",
    "ErasureReport",
    "RetentionManager",
    "RetentionReport",
    "pseudonym",
]

logger = logging.getLogger(__name__)

Eraser = Callable[[str], Awaitable[int]]
Purger = Callable[[float], Awaitable[int]]
DAY_S = 86_400.0


def pseudonym(user_id: str) -> str:
    """A stable, non-reversible stand-in for ``user_id`` in reports and logs.

    >>> pseudonym("alice")
    'user-2bd806c9'
    """
    return "user-" + hashlib.sha256(user_id.encode("utf-8")).hexdigest()[:8]


def _failure(exc: BaseException) -> str:
    # platform errors say what went wrong; anything else might echo data, so only its type
    return exc.message if isinstance(exc, GFError) else type(exc).__name__


@dataclass(frozen=True)
class ErasureReport:
    """What one erasure did: rows deleted per store, stores that failed, and when."""

    subject: str
    deleted: dict[str, int] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    started_at: float = 0.0
    finished_at: float = 0.0

    @property
    def complete(self) -> bool:
        return not self.failed

    @property
    def total(self) -> int:
        return sum(self.deleted.values())


class ErasureRegistry:
    """Stores register an eraser; ``erase(user_id)`` runs them all (concurrently, each with a
    timeout) and reports. Run it again after a partial failure: erasers must be idempotent."""

    def __init__(self, timeout_s: float = 60.0) -> None:
        self.timeout_s = timeout_s
        self._erasers: dict[str, Eraser] = {}

    @property
    def stores(self) -> list[str]:
        return sorted(self._erasers)

    def register(self, store: str, eraser: Eraser) -> None:
        if store in self._erasers:
            raise Conflict(f"an eraser for store {store!r} is already registered")
        self._erasers[store] = eraser

    async def _one(self, store: str, eraser: Eraser, user_id: str) -> tuple[str, int | str]:
        try:
            count = await asyncio.wait_for(eraser(user_id), self.timeout_s)
        except TimeoutError:
            return store, f"timed out after {self.timeout_s:g} s"
        except Exception as exc:  # one failing store must not stop the others
            return store, _failure(exc)
        return store, int(count)

    async def erase(self, user_id: str) -> ErasureReport:
        if not user_id or not user_id.strip():
            raise ValidationError("erasure needs a user id", param="user_id")
        if not self._erasers:
            raise ConfigError("no store registered for erasure: nothing would be erased")
        started = time.time()
        outcomes = await asyncio.gather(
            *(self._one(store, eraser, user_id) for store, eraser in sorted(self._erasers.items()))
        )
        report = ErasureReport(
            subject=pseudonym(user_id),
            deleted={s: r for s, r in outcomes if isinstance(r, int)},
            failed={s: r for s, r in outcomes if isinstance(r, str)},
            started_at=started,
            finished_at=time.time(),
        )
        log = logger.info if report.complete else logger.error
        log(
            "erasure finished",
            extra={
                "subject": report.subject,
                "deleted": report.deleted,
                "failed": sorted(report.failed),
            },
        )
        return report


@dataclass(frozen=True)
class RetentionReport:
    deleted: dict[str, int] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    cutoffs: dict[str, float] = field(default_factory=dict)


class RetentionManager:
    """Stores register a purger and a maximum age in days; ``run()`` applies every policy."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._policies: dict[str, tuple[Purger, float]] = {}

    @property
    def policies(self) -> dict[str, float]:
        """Store -> maximum age in days."""
        return {store: days for store, (_, days) in sorted(self._policies.items())}

    def register(self, store: str, purge: Purger, *, max_age_days: float) -> None:
        if not max_age_days > 0:
            raise ConfigError(f"max_age_days must be positive, got {max_age_days}", param=store)
        if store in self._policies:
            raise Conflict(f"a retention policy for store {store!r} is already registered")
        self._policies[store] = (purge, float(max_age_days))

    async def run(self) -> RetentionReport:
        now = self._clock()
        deleted: dict[str, int] = {}
        failed: dict[str, str] = {}
        cutoffs: dict[str, float] = {}
        for store, (purge, days) in sorted(self._policies.items()):
            cutoff = now - days * DAY_S
            cutoffs[store] = cutoff
            try:
                deleted[store] = int(await purge(cutoff))
            except Exception as exc:  # one failing store must not stop the others
                failed[store] = _failure(exc)
        logger.info("retention run", extra={"deleted": deleted, "failed": sorted(failed)})
        return RetentionReport(deleted=deleted, failed=failed, cutoffs=cutoffs)
