"""Token and money budgets: reserve before a model call, settle after, release on failure.

A :class:`Budget` limits dollars or tokens for one scope: each ``request``, or each API ``key``,
``user``, ``team`` or ``org`` (read from the caller's :class:`Principal`), optionally only the one
named by ``id``, over a ``daily``, ``monthly`` or ``total`` window (calendar-aligned, UTC).
Crossing ``soft_ratio`` of a limit raises an alert (an event sent to every registered async
callback and to the log). Reaching the limit blocks the call with ``BudgetExceeded`` (HTTP 429)
when the budget is ``hard``, lets it through on a cheaper model when ``downgrade_to`` is set
(``reservation.downgrade_to``), or only alerts when it is not hard.

:class:`BudgetPolicyEngine` implements the ``BudgetPolicy`` contract. ``reserve`` holds the
estimate on every budget that applies, atomically (all or none); ``settle`` swaps it for the real
cost and writes the :class:`CostRecord` to the ledger; ``release`` gives the hold back. Counters
live in a backend: in-process (default) or Redis (exact across replicas).

Example:
    >>> import asyncio, tempfile, pathlib
    >>> from decimal import Decimal
    >>> from genai_factory.cost.budgets import BudgetPolicyEngine
    >>> from genai_factory.cost.ledger import SQLiteSpendLedger
    >>> from genai_factory.shared.errors import BudgetExceeded
    >>> from genai_factory.shared.models import ChatCompletionRequest, CostRecord, Principal
    >>> engine = BudgetPolicyEngine(
    ...     budgets=[{"scope": "team", "period": "monthly", "limit_usd": "1.00"}],
    ...     ledger=SQLiteSpendLedger(pathlib.Path(tempfile.mkdtemp()) / "spend.sqlite3"))
    >>> alice = Principal(subject="alice", team_id="research")
    >>> request = ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "Hi"}])
    >>> async def one_call(estimate, cost):
    ...     reservation = await engine.reserve(alice, request, Decimal(estimate))
    ...     record = CostRecord(request_id=reservation.id, model="m", cost_usd=Decimal(cost))
    ...     await engine.settle(reservation, record)
    >>> asyncio.run(one_call("0.80", "0.70"))
    >>> try:
    ...     asyncio.run(one_call("0.40", "0.40"))
    ... except BudgetExceeded as exc:
    ...     print(exc.status, exc.message)
    429 budget 'team-monthly-usd' would be exceeded for team:research ...
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, unquote

import pydantic
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from genai_factory.cost.backends import (
    BudgetBackend,
    CounterChange,
    Hold,
    InProcessBudgetBackend,
    Mode,
    Unit,
)
from genai_factory.cost.estimator import CostEstimate, CostEstimator
from genai_factory.cost.ledger import SQLiteSpendLedger
from genai_factory.cost.periods import Period, PeriodWindow, period_window
from genai_factory.cost.prices import (
    ModelPrice,
    as_price_table,
    nano_to_usd,
    usd_to_nano,
    usd_to_nano_floor,
)
from genai_factory.shared.contracts import BudgetReservation, SpendLedger
from genai_factory.shared.errors import BudgetExceeded, ConfigError, ValidationError
from genai_factory.shared.factory import build_component
from genai_factory.shared.models import (
    ChatCompletionRequest,
    CostRecord,
    Principal,
    new_id,
)
from genai_factory.shared.settings import read_yaml

__all__ = [
    "AlertCallback",
    "Budget",
    "BudgetEvent",
    "BudgetPolicyEngine",
    "BudgetUsage",
    "load_budget_policy",
]

logger = logging.getLogger("genai_factory.cost.budgets")

Scope = Literal["request", "key", "user", "team", "org"]
EventKind = Literal["soft_limit", "limit_reached", "downgraded", "blocked"]
AlertCallback = Callable[["BudgetEvent"], Awaitable[None]]
LedgerWrite = Literal["auto", "sync", "deferred"]

# Scopes a principal carries, in the order reservations list them.
_PRINCIPAL_SCOPES: tuple[tuple[str, str], ...] = (
    ("key", "key_id"),
    ("user", "user_id"),
    ("team", "team_id"),
    ("org", "org_id"),
)
_OVER_LIMIT_EVENT: dict[str, EventKind] = {
    "hard": "blocked",
    "downgrade": "downgraded",
    "soft": "limit_reached",
}
# A counter outlives its window by this much, so late settlements and reports still find it.
_COUNTER_GRACE_S = 2 * 86_400
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:=@-]{0,127}$")


class Budget(BaseModel):
    """One limit: ``limit_usd`` or ``limit_tokens`` per ``scope`` (and ``id``) per ``period``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(default="", description="unique; default '<scope>[=<id>]-<period>-<unit>'")
    scope: Scope
    id: str | None = Field(default=None, min_length=1, description="only this key/user/team/org")
    period: Period = "monthly"
    limit_usd: Decimal | None = Field(default=None, ge=0, allow_inf_nan=False)
    # validate_default: the "exactly one limit" check below runs when neither limit is set
    limit_tokens: int | None = Field(default=None, ge=0, validate_default=True)
    soft_ratio: float | None = Field(
        default=0.8, gt=0, le=1, description="alert at this share of the limit; null: no alert"
    )
    hard: bool = Field(default=True, description="block at the limit (else alert only)")
    downgrade_to: str | None = Field(
        default=None, min_length=1, description="at the limit, use this model instead of blocking"
    )

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if value and not _NAME.match(value):
            raise ValueError("name must be 1-128 characters of letters, digits and _ . : = @ -")
        return value

    @field_validator("id")
    @classmethod
    def _id_needs_a_named_scope(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("scope") == "request":
            raise ValueError("'id' names a key, user, team or org; a request budget has none")
        return value

    @field_validator("limit_tokens")
    @classmethod
    def _exactly_one_limit(cls, value: int | None, info: ValidationInfo) -> int | None:
        if "limit_usd" not in info.data:
            return value  # limit_usd itself was invalid: that error is the one to report
        if (info.data["limit_usd"] is None) == (value is None):
            raise ValueError("set exactly one of 'limit_usd' and 'limit_tokens'")
        return value

    @model_validator(mode="after")
    def _default_name(self) -> Budget:
        if not self.name:
            who = f"={self.id}" if self.id and _NAME.match(f"x={self.id}") else ""
            period = "each" if self.scope == "request" else self.period
            object.__setattr__(self, "name", f"{self.scope}{who}-{period}-{self.unit}")
        return self

    @property
    def unit(self) -> Unit:
        return "usd" if self.limit_usd is not None else "tokens"

    @property
    def mode(self) -> Mode:
        if self.downgrade_to is not None:
            return "downgrade"
        return "hard" if self.hard else "soft"

    @property
    def limit_units(self) -> int:
        """The limit in counter units: whole nano-USD (rounded down) or tokens."""
        if self.limit_usd is not None:
            return usd_to_nano_floor(self.limit_usd)
        return int(self.limit_tokens or 0)

    @property
    def soft_units(self) -> int | None:
        if self.soft_ratio is None:
            return None
        return math.ceil(self.limit_units * self.soft_ratio)

    def describe_units(self, units: int) -> str:
        if self.unit == "usd":
            return f"{nano_to_usd(units).normalize():f} USD"
        return f"{units} tokens"


@dataclass(frozen=True, slots=True)
class BudgetEvent:
    """An alert: a soft limit crossed, a limit reached, a call downgraded or blocked."""

    kind: EventKind
    budget: str
    scope: str
    period: str
    window: str
    unit: Unit
    used: Decimal
    limit: Decimal
    reservation_id: str | None = None
    model: str | None = None
    downgrade_to: str | None = None


@dataclass(frozen=True, slots=True)
class BudgetUsage:
    """Where one budget stands for one scope in its current window (holds included)."""

    budget: str
    scope: str
    period: str
    window: str
    unit: Unit
    used: Decimal
    limit: Decimal
    mode: Mode

    @property
    def ratio(self) -> float:
        return float(self.used / self.limit) if self.limit else math.inf if self.used else 0.0


@dataclass(frozen=True, slots=True)
class _Counter:
    budget: Budget
    scope: str  # "team:research"
    window: PeriodWindow
    key: str


# Counters remembered per engine (budget, scope and window): enough for every active key of a
# large deployment; cleared when full, which only costs recomputing them.
_COUNTER_CACHE_SIZE = 4096


def _counter_key(budget: Budget, scope: str, window: PeriodWindow) -> str:
    kind, _, value = scope.partition(":")
    # quote() every part: ids are caller-controlled and must not forge another counter's key
    return f"{quote(budget.name, safe='')}|{kind}:{quote(value, safe='')}|{window.key}"


def _as_budgets(values: Sequence[Budget | Mapping[str, Any]]) -> list[Budget]:
    """Budgets from models or plain mappings (Python callers may pass either)."""
    budgets: list[Budget] = []
    for i, value in enumerate(values):
        if isinstance(value, Budget):
            budgets.append(value)
            continue
        try:
            budgets.append(Budget.model_validate(value))
        except pydantic.ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            field = ".".join(["budgets", str(i), *(str(p) for p in first["loc"])])
            raise ConfigError(f"invalid '{field}': {first['msg']}", param=field) from None
    names: set[str] = set()
    for i, budget in enumerate(budgets):
        if budget.name in names:
            raise ConfigError(
                f"'budgets.{i}.name': two budgets are named '{budget.name}'; give each a name",
                param=f"budgets.{i}.name",
            )
        names.add(budget.name)
    return budgets


class BudgetPolicyEngine:
    """The ``BudgetPolicy`` contract over token and money budgets (see the module docstring).

    ``prices`` (a ``model -> {input, output, cached_input}`` mapping in USD per 1M tokens) prices
    requests whose caller passes no estimate and records that carry no cost. ``backend`` holds
    the counters (default: in-process); ``ledger`` records every settled call (default: SQLite at
    ``.gf-data/cost-ledger.sqlite3``); ``record_spend=False`` keeps no ledger at all.

    ``ledger_write`` says when the ledger is written. ``sync``: before ``settle`` returns (one
    committed write per call). ``deferred``: ``settle`` returns once the backend has parked the
    record in its outbox (atomically with the counters), and a background task writes the records
    to the ledger in batches (one transaction, one fsync per batch, at most one batch per
    ``flush_interval_s`` unless ``flush_batch`` records are waiting) and then drops them from the
    outbox; a crash leaves them in the outbox for :meth:`recover`. Deferred needs a backend whose
    outbox survives this process (Redis); ``auto`` (default) picks deferred for such a backend
    and sync otherwise.
    """

    def __init__(
        self,
        budgets: Sequence[Budget] = (),
        prices: Mapping[str, ModelPrice] | None = None,
        backend: BudgetBackend | None = None,
        ledger: SpendLedger | None = None,
        estimator: CostEstimator | None = None,
        record_spend: bool = True,
        ledger_write: LedgerWrite = "auto",
        flush_batch: int = 512,
        flush_interval_s: float = 1.0,
    ) -> None:
        if ledger_write not in ("auto", "sync", "deferred"):
            raise ConfigError(
                "'ledger_write' must be 'auto', 'sync' or 'deferred'", param="ledger_write"
            )
        if flush_batch < 1:
            raise ConfigError("'flush_batch' must be at least 1", param="flush_batch")
        if not 0 <= flush_interval_s <= 60:
            raise ConfigError(
                "'flush_interval_s' must be between 0 and 60", param="flush_interval_s"
            )
        self.budgets = _as_budgets(budgets)
        self.prices = as_price_table(prices)
        self.backend: BudgetBackend = backend or InProcessBudgetBackend()
        self.ledger: SpendLedger | None = (
            (ledger or SQLiteSpendLedger(Path(".gf-data") / "cost-ledger.sqlite3"))
            if record_spend
            else None
        )
        self.estimator = estimator or CostEstimator(self.prices)
        self.record_spend = record_spend
        self.ledger_write: LedgerWrite = ledger_write
        self.flush_batch = flush_batch
        self.flush_interval_s = flush_interval_s
        durable = bool(getattr(self.backend, "durable_outbox", False))
        if ledger_write == "deferred" and not durable:
            raise ConfigError(
                "ledger_write 'deferred' needs a backend whose outbox outlives the process "
                "(Redis); this one keeps it in memory, so use 'sync'",
                param="ledger_write",
            )
        self._deferred = self.ledger is not None and durable and ledger_write != "sync"
        # records settled but not yet in the ledger (they are in the backend's outbox too)
        self._queue: list[tuple[str, CostRecord]] = []
        self._flusher: asyncio.Task[None] | None = None
        # Set to end the flusher's wait early: a full batch, flush() or close(). One per flusher
        # task, so an engine used from several event loops never shares one between them.
        self._wake: asyncio.Event | None = None
        self._needs_recovery = False
        self._closing = False
        self._by_name = {budget.name: budget for budget in self.budgets}
        self._callbacks: list[AlertCallback] = []
        self._seeded: set[str] = set()
        self._recovered = False
        self._clock: Callable[[], float] = time.time
        self._windows: dict[Period, tuple[float, float | None, PeriodWindow]] = {}
        self._counter_cache: dict[tuple[str, str, str], _Counter] = {}

    def to_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {
            "budgets": [
                budget.model_dump(mode="json", exclude_defaults=True) for budget in self.budgets
            ],
            "prices": {name: p.model_dump(mode="json") for name, p in self.prices.models.items()},
            "backend": self.backend,
            "estimator": self.estimator,
            "record_spend": self.record_spend,
            "ledger_write": self.ledger_write,
            "flush_batch": self.flush_batch,
            "flush_interval_s": self.flush_interval_s,
        }
        if self.ledger is not None:
            params["ledger"] = self.ledger
        return params

    # ------------------------------------------------------------------ alerts

    def add_alert_callback(self, callback: AlertCallback) -> None:
        """Call ``await callback(event)`` for every budget event (errors are logged, not raised)."""
        self._callbacks.append(callback)

    def remove_alert_callback(self, callback: AlertCallback) -> None:
        self._callbacks.remove(callback)

    async def _deliver(self, events: Sequence[BudgetEvent]) -> None:
        for event in events:
            level = logging.INFO if event.kind == "downgraded" else logging.WARNING
            logger.log(
                level,
                "budget %s: %s for %s (%s of %s %s)",
                event.kind,
                event.budget,
                event.scope,
                event.used,
                event.limit,
                event.unit,
                extra={"budget_event": event.kind, "budget": event.budget, "scope": event.scope},
            )
        if not self._callbacks or not events:
            return
        calls = [callback(event) for event in events for callback in self._callbacks]
        for result in await asyncio.gather(*calls, return_exceptions=True):
            if isinstance(result, BaseException):
                logger.error(
                    "a budget alert callback failed: %s: %s", type(result).__name__, result
                )

    def _event(
        self,
        kind: EventKind,
        budget: Budget,
        scope: str,
        window: str,
        used: int,
        *,
        reservation_id: str | None = None,
        model: str | None = None,
    ) -> BudgetEvent:
        to_value = nano_to_usd if budget.unit == "usd" else Decimal
        return BudgetEvent(
            kind=kind,
            budget=budget.name,
            scope=scope,
            period="each" if budget.scope == "request" else budget.period,
            window=window,
            unit=budget.unit,
            used=to_value(used),
            limit=to_value(budget.limit_units),
            reservation_id=reservation_id,
            model=model,
            downgrade_to=budget.downgrade_to if kind == "downgraded" else None,
        )

    def _crossings(
        self, changes: Sequence[CounterChange], reservation_id: str, model: str | None
    ) -> list[BudgetEvent]:
        """Alerts for counters that crossed a threshold going up (decided atomically, once)."""
        events: list[BudgetEvent] = []
        for change in changes:
            name, scope, window = change.counter.split("|", 2)
            budget = self._by_name.get(unquote(name))
            if budget is None or change.after <= change.before:
                continue
            scope_kind, _, scope_value = scope.partition(":")
            label = f"{scope_kind}:{unquote(scope_value)}"
            soft = budget.soft_units
            if soft is not None and change.before < soft <= change.after:
                events.append(
                    self._event(
                        "soft_limit",
                        budget,
                        label,
                        window,
                        change.after,
                        reservation_id=reservation_id,
                        model=model,
                    )
                )
            if budget.mode == "soft" and change.before <= budget.limit_units < change.after:
                events.append(
                    self._event(
                        "limit_reached",
                        budget,
                        label,
                        window,
                        change.after,
                        reservation_id=reservation_id,
                        model=model,
                    )
                )
        return events

    # ------------------------------------------------------------------ counters

    def _counters(
        self, principal_scopes: Mapping[str, str | None], moment: float
    ) -> list[_Counter]:
        counters: list[_Counter] = []
        for budget in self.budgets:
            if budget.scope == "request":
                continue
            value = principal_scopes.get(budget.scope)
            if value is None or (budget.id is not None and value != budget.id):
                continue
            scope = f"{budget.scope}:{value}"
            window = self._window(budget.period, moment)
            cache_key = (budget.name, scope, window.key)
            counter = self._counter_cache.get(cache_key)
            if counter is None:
                if len(self._counter_cache) >= _COUNTER_CACHE_SIZE:
                    self._counter_cache.clear()  # ids seen long ago or windows now over
                counter = _Counter(budget, scope, window, _counter_key(budget, scope, window))
                self._counter_cache[cache_key] = counter
            counters.append(counter)
        return counters

    def _window(self, period: Period, moment: float) -> PeriodWindow:
        """The period's window at ``moment``; the last one found is reused while it holds.

        Why: every reserve and settle asks for each budget's window, and building one (exact
        flooring, calendar arithmetic) costs more than the rest of the counter lookup.
        """
        cached = self._windows.get(period)
        if cached is not None:
            start_s, end_s, window = cached
            if start_s <= moment and (end_s is None or moment < end_s):
                return window
        window = period_window(period, moment)
        self._windows[period] = (window.start_epoch_s, window.end_epoch_s, window)
        return window

    @staticmethod
    def _expire_at(window: PeriodWindow) -> int:
        end = window.end_epoch_s
        return 0 if end is None else int(end) + _COUNTER_GRACE_S

    def _hold(self, counter: _Counter, usd_nano: int, tokens: int) -> Hold:
        budget = counter.budget
        return Hold(
            counter=counter.key,
            unit=budget.unit,
            amount=usd_nano if budget.unit == "usd" else tokens,
            limit=budget.limit_units,
            mode=budget.mode,
            expire_at=self._expire_at(counter.window),
        )

    async def _seed(self, counters: Sequence[_Counter]) -> None:
        """Start counters this process has not seen from the ledger, so restarts keep the spend."""
        usage = getattr(self.ledger, "usage", None)
        for counter in counters:
            if counter.key in self._seeded:
                continue
            if usage is not None:
                since = counter.window.start_epoch_s if counter.window.end is not None else None
                spent = await usage(counter.scope, since, counter.window.end_epoch_s)
                amount = (
                    usd_to_nano(spent.cost_usd) if counter.budget.unit == "usd" else spent.tokens
                )
                await self.backend.seed(counter.key, amount, self._expire_at(counter.window))
            self._seeded.add(counter.key)

    # ------------------------------------------------------------------ the contract

    def estimate(self, request: ChatCompletionRequest, model: str | None = None) -> CostEstimate:
        """The worst-case tokens and cost of ``request`` (the price table's view)."""
        return self.estimator.estimate(request, model)

    async def reserve(
        self, principal: Principal, request: ChatCompletionRequest, estimate_usd: Decimal
    ) -> BudgetReservation:
        """Hold ``estimate_usd`` (or the price table's estimate when it is 0) on every budget."""
        if (
            not isinstance(estimate_usd, Decimal)
            or not estimate_usd.is_finite()
            or estimate_usd < 0
        ):
            raise ValidationError(
                "estimate_usd must be a finite, non-negative Decimal", param="estimate_usd"
            )
        await self._start()
        estimate = self.estimator.estimate(request)
        usd = estimate_usd if estimate_usd > 0 else estimate.usd
        usd_nano, tokens = usd_to_nano(usd), estimate.total_tokens
        reservation_id = new_id("budget")
        scopes = {scope: getattr(principal, attribute) for scope, attribute in _PRINCIPAL_SCOPES}
        events: list[BudgetEvent] = []
        downgrade_to: str | None = None

        for budget in self.budgets:
            if budget.scope != "request":
                continue
            amount = usd_nano if budget.unit == "usd" else tokens
            if amount > budget.limit_units:
                kind = _OVER_LIMIT_EVENT[budget.mode]
                events.append(
                    self._event(
                        kind,
                        budget,
                        "request",
                        "each",
                        amount,
                        reservation_id=reservation_id,
                        model=request.model,
                    )
                )
                if budget.mode == "hard":
                    await self._deliver(events)
                    raise BudgetExceeded(
                        f"request would use up to {budget.describe_units(amount)}, over the "
                        f"per-request limit of {budget.describe_units(budget.limit_units)} "
                        f"(budget '{budget.name}')",
                        code="request_budget_exceeded",
                    )
                if budget.mode == "downgrade" and downgrade_to is None:
                    downgrade_to = budget.downgrade_to
            elif budget.soft_units is not None and amount >= budget.soft_units:
                events.append(
                    self._event(
                        "soft_limit",
                        budget,
                        "request",
                        "each",
                        amount,
                        reservation_id=reservation_id,
                        model=request.model,
                    )
                )

        counters = self._counters(scopes, self._clock())
        await self._seed(counters)
        holds = [self._hold(counter, usd_nano, tokens) for counter in counters]
        outcome = await self.backend.reserve(reservation_id, holds)
        if not outcome.ok:
            counter = next(c for c in counters if c.key == outcome.blocked)
            budget = counter.budget
            events.append(
                self._event(
                    "blocked",
                    budget,
                    counter.scope,
                    counter.window.key,
                    outcome.blocked_used,
                    reservation_id=reservation_id,
                    model=request.model,
                )
            )
            await self._deliver(events)
            raise BudgetExceeded(
                f"budget '{budget.name}' would be exceeded for {counter.scope} "
                f"({counter.window.key}): {budget.describe_units(outcome.blocked_used)} of "
                f"{budget.describe_units(budget.limit_units)} used",
                code="budget_exceeded",
            )
        for counter, change in zip(counters, outcome.changes, strict=True):
            budget = counter.budget
            if budget.mode == "downgrade" and change.after > budget.limit_units:
                events.append(
                    self._event(
                        "downgraded",
                        budget,
                        counter.scope,
                        counter.window.key,
                        change.after,
                        reservation_id=reservation_id,
                        model=request.model,
                    )
                )
                downgrade_to = downgrade_to or budget.downgrade_to
        events.extend(self._crossings(outcome.changes, reservation_id, request.model))
        await self._deliver(events)
        return BudgetReservation(
            id=reservation_id,
            scopes=tuple(
                f"{scope}:{value}" for scope, value in scopes.items() if value is not None
            ),
            amount_usd=usd,
            downgrade_to=downgrade_to,
        )

    def _complete(self, reservation: BudgetReservation, record: CostRecord) -> CostRecord:
        """Fill what the record lacks: its price (from the table) and its attribution."""
        updates: dict[str, Any] = {}
        if (
            record.cost_usd == 0
            and not record.cache_hit
            and (record.input_tokens or record.output_tokens)
            and self.prices.price(record.model) is not None
        ):
            updates["cost_usd"] = self.prices.cost(
                record.model, record.input_tokens, record.output_tokens, record.cached_input_tokens
            )
        for scope in reservation.scopes:
            kind, _, value = scope.partition(":")
            attribute = f"{kind}_id"
            if kind in ("key", "user", "team", "org") and getattr(record, attribute) is None:
                updates[attribute] = value
        return record.model_copy(update=updates) if updates else record

    async def settle(self, reservation: BudgetReservation, record: CostRecord) -> None:
        """Replace the held estimate with the real cost, then record the call in the ledger.

        Safe to repeat: a second settle of the same reservation changes no counter, and the
        ledger keeps one record per request id.
        """
        await self._start()
        record = self._complete(reservation, record)
        usd_nano = usd_to_nano(record.cost_usd)
        tokens = record.input_tokens + record.output_tokens
        scopes = {scope: getattr(record, attribute) for scope, attribute in _PRINCIPAL_SCOPES}
        moment = record.timestamp.timestamp()
        fallback = [self._hold(c, usd_nano, tokens) for c in self._counters(scopes, moment)]
        payload = record.model_dump_json() if self.ledger is not None else ""
        outcome = await self.backend.settle(
            reservation.id, usd_nano=usd_nano, tokens=tokens, fallback=fallback, payload=payload
        )
        if self.ledger is not None:
            if self._deferred:
                self._defer(reservation.id, record)  # already durable in the backend's outbox
            else:
                await self.ledger.record(record)
                await self.backend.acknowledge(reservation.id)
        if outcome.status == "late":
            logger.warning(
                "reservation %s was settled after it expired or was released; counted its cost",
                reservation.id,
            )
        await self._deliver(self._crossings(outcome.changes, reservation.id, record.model))

    async def release(self, reservation: BudgetReservation) -> None:
        """Give the held estimate back (the call failed or never happened)."""
        await self.backend.release(reservation.id)

    # ------------------------------------------------------------------ deferred ledger writes

    def _defer(self, reservation_id: str, record: CostRecord) -> None:
        self._queue.append((reservation_id, record))
        running = asyncio.get_running_loop()
        if self._flusher is None or self._flusher.done() or self._flusher.get_loop() is not running:
            self._wake = asyncio.Event()
            self._flusher = running.create_task(self._flush_loop(self._wake))
        elif len(self._queue) >= self.flush_batch and self._wake is not None:
            self._wake.set()  # a full batch is written now, not after the interval

    async def _write_batch(self, batch: Sequence[tuple[str, CostRecord]]) -> None:
        assert self.ledger is not None
        records = [record for _, record in batch]
        record_many = getattr(self.ledger, "record_many", None)
        if record_many is not None:
            await record_many(records)  # one transaction: one fsync for the batch
        else:
            for record in records:
                await self.ledger.record(record)
        ids = [reservation_id for reservation_id, _ in batch]
        acknowledge_many = getattr(self.backend, "acknowledge_many", None)
        if acknowledge_many is not None:
            await acknowledge_many(ids)  # one round trip for the batch
        else:
            for reservation_id in ids:
                await self.backend.acknowledge(reservation_id)

    async def _flush_loop(self, wake: asyncio.Event) -> None:
        """Write queued records in batches: what queues up within ``flush_interval_s`` (or during
        the previous write) is one batch, one commit (group commit). On a failure the records are
        still in the outbox: retry through :meth:`recover` with a growing pause, until it works
        or the engine closes."""
        pause = 0.5
        while self._queue or self._needs_recovery:
            if len(self._queue) < self.flush_batch and self.flush_interval_s and not self._closing:
                # Let a batch gather. Each batch's commit costs the callers running beside it a
                # little (its fsync and SQLite work share the CPU): fewer, larger batches put
                # that on fewer calls (see the README's Benchmarks).
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), self.flush_interval_s)
            wake.clear()
            try:
                if self._needs_recovery:
                    self._queue.clear()  # all of it is in the outbox, which recover() reads
                    await self.recover()
                    self._needs_recovery = False
                else:
                    batch = self._queue[: self.flush_batch]
                    del self._queue[: len(batch)]
                    await self._write_batch(batch)
                pause = 0.5
            except Exception as exc:  # a background task: log, keep the outbox
                logger.error(
                    "could not write cost records to the ledger (%s: %s); they stay in the "
                    "outbox and are retried",
                    type(exc).__name__,
                    exc,
                )
                self._needs_recovery = True
                if self._closing:
                    return
                await asyncio.sleep(pause)
                pause = min(pause * 2, 30.0)

    async def flush(self) -> None:
        """Wait until every record settled so far is in the ledger (deferred writes).

        Raises the ledger's error when the records could not be written (they stay in the
        outbox for :meth:`recover`).
        """
        flusher = self._flusher
        if flusher is not None and flusher.get_loop() is asyncio.get_running_loop():
            if self._wake is not None:
                self._wake.set()  # write now instead of at the end of the interval
            await asyncio.shield(flusher)
        if self._queue or self._needs_recovery:  # left by another event loop, or a failure
            self._queue.clear()
            await self.recover()
            self._needs_recovery = False

    # ------------------------------------------------------------------ operations

    async def _start(self) -> None:
        if not self._recovered:
            self._recovered = True
            await self.recover()

    async def recover(self) -> int:
        """Write to the ledger every settled record a crash left in the outbox; returns how many.

        Safe to run at any time and from every replica: the ledger ignores records it has.
        """
        if self.ledger is None:
            return 0
        recovered = 0
        for reservation_id, payload in await self.backend.pending():
            await self.ledger.record(CostRecord.model_validate_json(payload))
            await self.backend.acknowledge(reservation_id)
            recovered += 1
        if recovered:
            logger.warning("recovered %d settled cost records into the ledger", recovered)
        return recovered

    async def sweep(self) -> int:
        """Release reservations past their TTL now (reserve does it too); returns how many."""
        return await self.backend.sweep()

    async def usage(self, principal: Principal) -> list[BudgetUsage]:
        """Every budget that applies to ``principal``, with its current window's usage."""
        scopes = {scope: getattr(principal, attribute) for scope, attribute in _PRINCIPAL_SCOPES}
        counters = self._counters(scopes, self._clock())
        await self._seed(counters)
        values = await self.backend.usage([counter.key for counter in counters])
        rows: list[BudgetUsage] = []
        for counter in counters:
            budget = counter.budget
            to_value = nano_to_usd if budget.unit == "usd" else Decimal
            rows.append(
                BudgetUsage(
                    budget=budget.name,
                    scope=counter.scope,
                    period=budget.period,
                    window=counter.window.key,
                    unit=budget.unit,
                    used=to_value(values.get(counter.key, 0)),
                    limit=to_value(budget.limit_units),
                    mode=budget.mode,
                )
            )
        return rows

    async def close(self) -> None:
        """Write what is still queued for the ledger, then close the backend and the ledger."""
        self._closing = True
        try:
            await self.flush()
        except Exception as exc:  # closing anyway: the outbox keeps them
            logger.error(
                "closing with cost records not yet in the ledger (%s); recover() writes them",
                type(exc).__name__,
            )
        await self.backend.close()
        closer = getattr(self.ledger, "close", None)
        if closer is not None:
            await closer()


def load_budget_policy(path: str | Path) -> BudgetPolicyEngine:
    """A :class:`BudgetPolicyEngine` from a YAML file (see the README for the format).

    The file holds the engine's params (``budgets``, ``prices``, ``backend``, ``ledger``...),
    either at the top level or under ``cost:``, or a whole ``{type, params}`` component spec.
    Invalid config raises ConfigError naming the field.
    """
    data = read_yaml(Path(path))
    if "cost" in data and isinstance(data["cost"], Mapping):
        data = dict(data["cost"])
    spec: Mapping[str, Any] = data
    if "type" not in data:
        spec = {"type": f"{__name__}:BudgetPolicyEngine", "params": data}
    return build_component(spec, BudgetPolicyEngine, where="cost")
