"""Real-time spend attribution from CostRecords: in-memory aggregates, SQLite, alert rules.

:class:`CostTracker` implements the shared ``SpendLedger`` contract. Each recorded
:class:`~genai_factory.shared.models.CostRecord` is priced (when it carries no cost and the price
table knows the model), added to running totals for every attribution dimension (org, team, user,
key, model, route, feature tag), kept per minute for the alert windows, written to the telemetry
store, and checked against the alert rules; fired alerts are delivered in the background.

Scopes are ``dimension:value`` (``team:search``, ``model:gpt-4o``, ``feature:summarise``) or
``all``.

Example:
    >>> import asyncio
    >>> from genai_factory.shared.models import CostRecord
    >>> from genai_factory.observability.pricing import PriceTable
    >>> tracker = CostTracker(price_table=PriceTable.load())
    >>> asyncio.run(tracker.record(CostRecord(request_id="r1", model="gpt-4o-mini", team_id="search",
    ...     input_tokens=1_000_000, output_tokens=0)))
    >>> asyncio.run(tracker.total("team:search"))
    Decimal('0.150000')
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from genai_factory.observability.alerts import Alert, AlertNotifier, AlertRule, Dimension, deliver
from genai_factory.observability.metrics import GenAIMetrics
from genai_factory.observability.pricing import PriceTable
from genai_factory.observability.store import CostRow, TelemetryStore
from genai_factory.shared.errors import ValidationError
from genai_factory.shared.models import CostRecord

__all__ = ["CostTracker", "SpendTotals", "scope_keys"]

_log = logging.getLogger("genai_factory.observability.cost")

_DIMENSIONS: tuple[Dimension, ...] = (
    "all",
    "org",
    "team",
    "user",
    "key",
    "model",
    "route",
    "feature",
)


@dataclass(slots=True)
class SpendTotals:
    """Running totals for one scope."""

    cost_usd: Decimal = Decimal(0)
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_hits: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "cost_usd": str(self.cost_usd),
            "requests": self.requests,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_hits": self.cache_hits,
        }


def scope_keys(record: CostRecord) -> list[str]:
    """Every scope a record counts towards, ``all`` first."""
    keys = ["all", f"model:{record.model}"]
    for dimension, value in (
        ("org", record.org_id),
        ("team", record.team_id),
        ("user", record.user_id),
        ("key", record.key_id),
        ("route", record.route),
        ("feature", record.tags.get("feature")),
    ):
        if value:
            keys.append(f"{dimension}:{value}")
    return keys


def _parse_scope(scope: str) -> tuple[str, str | None]:
    if scope in {"all", "*"}:
        return "all", None
    dimension, sep, value = scope.partition(":")
    if not sep or dimension not in _DIMENSIONS or not value:
        raise ValidationError(
            f"scope must be 'all' or one of {', '.join(_DIMENSIONS[1:])} as 'dimension:value'",
            param="scope",
        )
    return dimension, value


class _MinuteSeries:
    """Per-minute [cost, requests, tokens] for one scope, trimmed to the longest rule window."""

    __slots__ = ("buckets",)

    def __init__(self) -> None:
        self.buckets: deque[list[float]] = deque()

    def add(self, minute: int, cost: float, tokens: int, horizon_min: int) -> None:
        if self.buckets and self.buckets[-1][0] == minute:
            bucket = self.buckets[-1]
            bucket[1] += cost
            bucket[2] += 1
            bucket[3] += tokens
        else:
            self.buckets.append([minute, cost, 1, tokens])
        while self.buckets and self.buckets[0][0] <= minute - horizon_min:
            self.buckets.popleft()

    def window(self, now_minute: int, window_min: int, metric: str) -> tuple[float, float]:
        """Totals of (this window, the window before it)."""
        column = {"cost_usd": 1, "requests": 2, "tokens": 3}[metric]
        current = previous = 0.0
        for bucket in self.buckets:
            age = now_minute - int(bucket[0])
            if age < window_min:
                current += bucket[column]
            elif age < 2 * window_min:
                previous += bucket[column]
        return current, previous


class CostTracker:
    """Attributes spend as it happens; a ``SpendLedger``.

    Args:
        store: where records are kept (None: memory only).
        price_table: prices records that arrive with ``cost_usd == 0`` (cache hits stay free).
        rules: alert rules, checked on every record against the scopes it touched.
        notifiers: where fired alerts go (webhook, log, store).
        metrics: when set, every record adds its cost to the ``gf.spend`` counter (by model, team).
        max_scopes: bound on tracked scopes; the least recently used is dropped beyond it.
    """

    def __init__(
        self,
        store: TelemetryStore | None = None,
        price_table: PriceTable | None = None,
        rules: Sequence[AlertRule] = (),
        notifiers: Sequence[AlertNotifier] = (),
        max_scopes: int = 50_000,
        metrics: GenAIMetrics | None = None,
    ) -> None:
        self.store = store
        self.price_table = price_table
        self.rules = list(rules)
        self.notifiers = list(notifiers)
        self.max_scopes = max_scopes
        self.metrics = metrics
        self._totals: OrderedDict[str, SpendTotals] = OrderedDict()
        self._series: dict[str, _MinuteSeries] = {}
        self._horizon_min = max((2 * r.window_s // 60 for r in self.rules), default=0) + 1
        self._last_fired: dict[tuple[str, str], float] = {}
        self._pending: set[asyncio.Task[None]] = set()
        self.alerts_fired = 0

    def to_params(self) -> dict[str, Any]:
        return {
            "rules": [rule.model_dump(mode="json") for rule in self.rules],
            "max_scopes": self.max_scopes,
        }

    def price(self, record: CostRecord) -> CostRecord:
        """The record with its cost filled in from the price table, when it has none."""
        if record.cost_usd > 0 or record.cache_hit or self.price_table is None:
            return record
        if not self.price_table.knows(record.model):
            return record
        cost = self.price_table.cost(
            record.model,
            input_tokens=record.input_tokens,
            output_tokens=record.output_tokens,
            cached_input_tokens=record.cached_input_tokens,
        )
        return record.model_copy(update={"cost_usd": cost})

    def _account(self, record: CostRecord) -> list[str]:
        keys = scope_keys(record)
        tokens = record.input_tokens + record.output_tokens
        minute = int(record.timestamp.timestamp() // 60)
        for key in keys:
            totals = self._totals.get(key)
            if totals is None:
                totals = self._totals[key] = SpendTotals()
                if len(self._totals) > self.max_scopes:
                    evicted, _ = self._totals.popitem(last=False)
                    self._series.pop(evicted, None)
            else:
                self._totals.move_to_end(key)
            totals.cost_usd += record.cost_usd
            totals.requests += 1
            totals.input_tokens += record.input_tokens
            totals.output_tokens += record.output_tokens
            totals.cache_hits += record.cache_hit
            if self.rules:
                series = self._series.get(key)
                if series is None:
                    series = self._series[key] = _MinuteSeries()
                series.add(minute, float(record.cost_usd), tokens, self._horizon_min)
        return keys

    def _check_rules(self, keys: Iterable[str], now: float) -> list[Alert]:
        fired: list[Alert] = []
        now_minute = int(now // 60)
        for rule in self.rules:
            for key in keys:
                dimension, value = _parse_scope(key)
                if dimension != rule.dimension or (rule.value is not None and value != rule.value):
                    continue
                series = self._series.get(key)
                if series is None:
                    continue
                current, previous = series.window(
                    now_minute, max(1, rule.window_s // 60), rule.metric
                )
                message = rule.check(current=current, previous=previous)
                if message is None:
                    continue
                last = self._last_fired.get((rule.name, key))
                if last is not None and now - last < rule.cooldown_s:
                    continue
                self._last_fired[(rule.name, key)] = now
                fired.append(
                    Alert(
                        rule=rule.name,
                        kind=rule.kind,
                        severity=rule.severity,
                        scope=key,
                        metric=rule.metric,
                        value=current,
                        threshold=rule.threshold,
                        previous=previous if rule.kind == "rate_of_change" else None,
                        message=message,
                    )
                )
        return fired

    async def record(self, record: CostRecord) -> None:
        """Price, attribute, persist and check one record; alerts are delivered in background."""
        await self.record_many([record])

    async def record_many(self, records: Sequence[CostRecord]) -> list[Alert]:
        """Like :meth:`record` for a batch (one store transaction); returns the alerts fired."""
        priced = [self.price(record) for record in records]
        touched: dict[str, None] = {}
        for record in priced:
            touched.update(dict.fromkeys(self._account(record)))
            if self.metrics is not None and record.cost_usd:
                self.metrics.record_spend(
                    float(record.cost_usd), model=record.model, team=record.team_id
                )
        if self.store is not None:
            rows = [_to_row(record) for record in priced]
            await asyncio.to_thread(self.store.write_costs, rows)
        alerts = self._check_rules(touched, time.time()) if self.rules else []
        for alert in alerts:
            self.alerts_fired += 1
            task = asyncio.create_task(deliver(alert, self.notifiers))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
        return alerts

    async def drain(self) -> None:
        """Wait until every alert delivery started so far has finished."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    async def total(self, scope: str, since_epoch_s: float | None = None) -> Decimal:
        """Spend of ``scope`` in USD: all time (this process) or since ``since_epoch_s`` (store)."""
        dimension, value = _parse_scope(scope)
        if since_epoch_s is None:
            totals = self._totals.get("all" if dimension == "all" else f"{dimension}:{value}")
            return totals.cost_usd if totals else Decimal(0)
        if self.store is None:
            raise ValidationError("spend since a time needs a store", param="since_epoch_s")
        return await asyncio.to_thread(self._stored_total, dimension, value, since_epoch_s)

    def _stored_total(self, dimension: str, value: str | None, since_epoch_s: float) -> Decimal:
        assert self.store is not None
        return self.store.cost_total(dimension, value, since_ns=int(since_epoch_s * 1e9))

    def breakdown(self, dimension: Dimension) -> dict[str, dict[str, Any]]:
        """Running totals of every scope of one dimension, biggest spender first."""
        prefix = f"{dimension}:"
        rows = {
            key.removeprefix(prefix): totals
            for key, totals in self._totals.items()
            if (key == "all" if dimension == "all" else key.startswith(prefix))
        }
        ordered = sorted(rows.items(), key=lambda item: item[1].cost_usd, reverse=True)
        return {name: totals.as_dict() for name, totals in ordered}


def _to_row(record: CostRecord) -> CostRow:
    return CostRow(
        request_id=record.request_id,
        ts_ns=int(record.timestamp.timestamp() * 1e9),
        model=record.model,
        provider=record.provider,
        org_id=record.org_id,
        team_id=record.team_id,
        user_id=record.user_id,
        key_id=record.key_id,
        route=record.route,
        tags=json.dumps(record.tags, sort_keys=True),
        input_tokens=record.input_tokens,
        output_tokens=record.output_tokens,
        cached_input_tokens=record.cached_input_tokens,
        cost_usd=str(record.cost_usd),
        cache_hit=record.cache_hit,
    )
