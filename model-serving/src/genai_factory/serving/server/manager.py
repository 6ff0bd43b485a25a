"""The model manager: several engines in one process, admitted, queued, loaded and evicted.

Each configured model has a slot with a semaphore (``max_concurrency`` requests run at once) and
a bounded wait queue (``max_queue``). A request that finds the queue full is refused at once with
429 and a Retry-After estimated from recent service times, one that waits past
``queue_timeout_s`` gets 503, and while the server drains every new request gets 503: overload
is answered, never left to time out.

Engines are built from their component spec on first use and loaded in a worker thread. Their
sizes (``memory_mb`` from config, else the engine's own ``memory_bytes()``, else the size of the
model file) must fit ``memory_budget_mb`` together; to load one, the least recently used idle
engines are closed first. A busy engine is never evicted: if only busy ones stand in the way the
request gets 503.

Example:
    >>> import asyncio
    >>> from genai_factory.serving.server.config import ModelConfig
    >>> from genai_factory.serving.server.manager import ModelManager
    >>> manager = ModelManager([ModelConfig(name="smollm2")], memory_budget_mb=1024)
    >>> manager.names(), manager.ready
    (['smollm2'], False)
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import math
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from genai_factory.serving.registry import resolve_model_path
from genai_factory.serving.server.config import ModelConfig
from genai_factory.shared.contracts import ChatModel
from genai_factory.shared.errors import (
    ConfigError,
    GFError,
    NotFound,
    RateLimited,
    ServiceUnavailable,
)
from genai_factory.shared.factory import build_component, import_object

__all__ = ["EngineBuilder", "ModelManager", "ModelState"]

EngineBuilder = Callable[[ModelConfig], ChatModel]

_MB = 1024 * 1024


def build_engine(config: ModelConfig) -> ChatModel:
    """The default builder: the config's component spec through the shared factory."""
    return build_component(config.engine, ChatModel, where=f"models.{config.name}.engine")


def _numbers(stats: Any) -> dict[str, float]:
    """The numeric fields of an engine's ``stats()``: a mapping, a dataclass or an object."""
    if isinstance(stats, Mapping):
        items = stats.items()
    elif dataclasses.is_dataclass(stats) and not isinstance(stats, type):
        items = dataclasses.asdict(stats).items()
    else:
        items = vars(stats).items()
    return {str(k): float(v) for k, v in items if isinstance(v, int | float)}


@dataclass(frozen=True, slots=True)
class ModelState:
    """A model's slot as /metrics and /v1/models see it."""

    name: str
    loaded: bool
    running: int
    waiting: int
    max_concurrency: int
    max_queue: int
    memory_bytes: int
    evictions: int
    rejected: dict[str, int]
    engine_stats: dict[str, float]


@dataclass(slots=True)
class _Slot:
    config: ModelConfig
    semaphore: asyncio.Semaphore
    engine: ChatModel | None = None
    memory_bytes: int = 0
    running: int = 0
    waiting: int = 0
    last_used: float = 0.0
    service_s: float = 1.0  # moving average of a request's time in the engine
    evictions: int = 0
    rejected: dict[str, int] = field(default_factory=dict)


class ModelManager:
    """Holds the configured chat models; hands out engines through :meth:`lease`.

    Args:
        models: the models to serve (names unique).
        memory_budget_mb: what all loaded engines together may take.
        retry_after_s: the Retry-After floor for refused requests.
        builder: turns a model's config into an engine (default: the shared factory).
    """

    def __init__(
        self,
        models: Sequence[ModelConfig],
        *,
        memory_budget_mb: float = 4096,
        retry_after_s: float = 1.0,
        builder: EngineBuilder | None = None,
    ) -> None:
        if not models:
            raise ConfigError("at least one model is needed", param="models")
        names = [m.name for m in models]
        if len(set(names)) != len(names):
            raise ConfigError("model names must be unique", param="models")
        self.models = list(models)
        self.memory_budget_mb = memory_budget_mb
        self.retry_after_s = retry_after_s
        self._builder = builder or build_engine
        self._slots = {m.name: _Slot(m, asyncio.Semaphore(m.max_concurrency)) for m in models}
        self._budget_lock = asyncio.Lock()
        self._started = False
        self._draining = False

    # ---------------------------------------------------------------------------------------
    # what is served

    def names(self) -> list[str]:
        return list(self._slots)

    def _slot(self, name: str) -> _Slot:
        slot = self._slots.get(name)
        if slot is None:
            known = ", ".join(self._slots)
            raise NotFound(
                f"the model '{name}' does not exist; this server serves: {known}",
                param="model",
                code="model_not_found",
            )
        return slot

    def config(self, name: str) -> ModelConfig:
        """The config of model ``name``; NotFound (404) naming the served models otherwise."""
        return self._slot(name).config

    def check(self) -> None:
        """Import every engine class now, so a wrong ``type`` fails at start-up, not on use."""
        for model in self.models:
            import_object(model.engine.type, where=f"models.{model.name}.engine.type")

    @property
    def budget_bytes(self) -> int:
        return int(self.memory_budget_mb * _MB)

    @property
    def used_bytes(self) -> int:
        return sum(s.memory_bytes for s in self._slots.values() if s.engine is not None)

    @property
    def ready(self) -> bool:
        """Started (preloads done) and not draining."""
        return self._started and not self._draining

    @property
    def draining(self) -> bool:
        return self._draining

    def states(self) -> list[ModelState]:
        states = []
        for name, slot in self._slots.items():
            stats: dict[str, float] = {}
            engine_stats = getattr(slot.engine, "stats", None)
            if callable(engine_stats):
                with contextlib.suppress(Exception):  # a metrics scrape must never fail
                    stats = _numbers(engine_stats())
            states.append(
                ModelState(
                    name=name,
                    loaded=slot.engine is not None,
                    running=slot.running,
                    waiting=slot.waiting,
                    max_concurrency=slot.config.max_concurrency,
                    max_queue=slot.config.max_queue,
                    memory_bytes=slot.memory_bytes if slot.engine is not None else 0,
                    evictions=slot.evictions,
                    rejected=dict(slot.rejected),
                    engine_stats=stats,
                )
            )
        return states

    # ---------------------------------------------------------------------------------------
    # life cycle

    async def start(self) -> None:
        """Load the models marked ``preload``; the manager is ready afterwards."""
        for name, slot in self._slots.items():
            if slot.config.preload:
                slot.running += 1  # protects it from eviction by the next preload
                try:
                    await self._ensure_loaded(name, slot)
                finally:
                    slot.running -= 1
                    slot.last_used = time.monotonic()
        self._started = True
        self._draining = False

    def begin_drain(self) -> None:
        """Refuse new requests (503) from now on; running ones go on."""
        self._draining = True

    async def drain(self, timeout_s: float) -> bool:
        """Refuse new requests and wait up to ``timeout_s`` for running ones; True if all ended."""
        self.begin_drain()
        deadline = time.monotonic() + timeout_s
        while any(s.running or s.waiting for s in self._slots.values()):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    async def close(self) -> None:
        """Free every engine (call after :meth:`drain`)."""
        async with self._budget_lock:
            for slot in self._slots.values():
                await self._unload(slot, evicted=False)
        self._started = False

    # ---------------------------------------------------------------------------------------
    # admission

    def _retry_after(self, slot: _Slot) -> float:
        rounds = math.ceil((slot.waiting + 1) / slot.config.max_concurrency)
        return max(self.retry_after_s, slot.service_s * rounds)

    def _reject(self, slot: _Slot, reason: str, error: GFError) -> GFError:
        slot.rejected[reason] = slot.rejected.get(reason, 0) + 1
        return error

    @contextlib.asynccontextmanager
    async def lease(self, name: str) -> AsyncIterator[ChatModel]:
        """Admit a request for ``name`` and lend it the loaded engine until the block ends.

        Raises NotFound (404), RateLimited (429, queue full) or ServiceUnavailable (503: not
        ready, draining, waited too long, or the memory budget is held by busy models).
        """
        slot = self._slot(name)
        if self._draining:
            raise self._reject(
                slot,
                "draining",
                ServiceUnavailable(
                    "the server is shutting down; retry on another replica",
                    retry_after=self.retry_after_s,
                    code="draining",
                ),
            )
        if not self._started:
            raise self._reject(
                slot,
                "not_ready",
                ServiceUnavailable(
                    "the server is still loading its models",
                    retry_after=self.retry_after_s,
                    code="not_ready",
                ),
            )
        if slot.semaphore.locked() and slot.waiting >= slot.config.max_queue:
            raise self._reject(
                slot,
                "queue_full",
                RateLimited(
                    f"the model '{name}' is busy: {slot.running} running and {slot.waiting} "
                    "waiting, the queue is full",
                    retry_after=self._retry_after(slot),
                    code="queue_full",
                ),
            )
        slot.waiting += 1
        try:
            async with asyncio.timeout(slot.config.queue_timeout_s):
                await slot.semaphore.acquire()
        except TimeoutError:
            raise self._reject(
                slot,
                "queue_timeout",
                ServiceUnavailable(
                    f"the model '{name}' did not free up within {slot.config.queue_timeout_s:g} s",
                    retry_after=self._retry_after(slot),
                    code="queue_timeout",
                ),
            ) from None
        finally:
            slot.waiting -= 1
        slot.running += 1
        started = time.monotonic()
        try:
            engine = slot.engine or await self._ensure_loaded(name, slot)
            slot.last_used = time.monotonic()
            yield engine
        finally:
            slot.running -= 1
            slot.last_used = time.monotonic()
            slot.service_s = 0.8 * slot.service_s + 0.2 * (slot.last_used - started)
            slot.semaphore.release()

    # ---------------------------------------------------------------------------------------
    # loading and eviction

    def _estimate(self, slot: _Slot, engine: ChatModel) -> int:
        if slot.config.memory_mb is not None:
            return int(slot.config.memory_mb * _MB)
        measure = getattr(engine, "memory_bytes", None)
        if callable(measure):
            return int(measure())
        model = slot.config.engine.params.get("model")
        if isinstance(model, str):
            with contextlib.suppress(GFError, OSError):
                return resolve_model_path(model).stat().st_size
        return 0

    async def _ensure_loaded(self, name: str, slot: _Slot) -> ChatModel:
        async with self._budget_lock:
            if slot.engine is not None:
                return slot.engine
            engine = self._builder(slot.config)
            need = self._estimate(slot, engine)
            if need > self.budget_bytes:
                raise ConfigError(
                    f"the model '{name}' needs about {need / _MB:.0f} MB, more than the whole "
                    f"memory budget ({self.memory_budget_mb:g} MB)",
                    param="memory_budget_mb",
                )
            await self._make_room(need, keep=slot)
            load = getattr(engine, "load", None)
            if callable(load):
                await asyncio.to_thread(load)
            slot.engine = engine
            slot.memory_bytes = need
            if slot.config.memory_mb is None:
                # a loaded engine knows its size better (e.g. the KV cache it allocated)
                measure = getattr(engine, "memory_bytes", None)
                if callable(measure):
                    slot.memory_bytes = int(measure())
                with contextlib.suppress(ServiceUnavailable):
                    await self._make_room(0, keep=slot)
            return engine

    async def _make_room(self, need: int, keep: _Slot) -> None:
        while self.used_bytes + need > self.budget_bytes:
            idle = [
                s
                for s in self._slots.values()
                if s.engine is not None and s is not keep and s.running == 0
            ]
            if not idle:
                raise ServiceUnavailable(
                    "the memory budget is held by models that are busy right now",
                    retry_after=self.retry_after_s,
                    code="memory_budget",
                )
            await self._unload(min(idle, key=lambda s: s.last_used), evicted=True)

    async def _unload(self, slot: _Slot, *, evicted: bool) -> None:
        engine, slot.engine = slot.engine, None
        if engine is None:
            return
        if evicted:
            slot.evictions += 1
        close = getattr(engine, "close", None)
        if inspect.iscoroutinefunction(close):
            await close()
        elif callable(close):
            await asyncio.to_thread(close)
