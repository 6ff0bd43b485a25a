"""Settings -> a running gateway: deployments, router, pipeline; hot reload and shutdown.

:class:`Gateway` owns one :class:`Runtime` at a time. A reload builds a new runtime and swaps it
in atomically: requests in flight finish on the runtime they started with; deployments whose
settings did not change keep their breaker, statistics and connection pool; pipeline components
(rate-limit counters, cache) are kept when their settings did not change; the providers of
removed deployments are closed once their requests drain. The named ``components`` and the
``mounts`` are built once, when the gateway starts: a reload that changes them is refused.

Examples:
    >>> from genai_factory.gateway.config import GatewaySettings
    >>> gateway = Gateway(GatewaySettings.model_validate({"deployments": [
    ...     {"model": "m", "base_url": "http://127.0.0.1:9/v1"}]}))
    >>> [d.name for d in gateway.runtime.router.deployments]
    ['m-0']
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from genai_factory.gateway.auth import APIKeyAuthenticator
from genai_factory.gateway.breaker import CircuitBreaker
from genai_factory.gateway.cache import ExactMatchCache
from genai_factory.gateway.components import ComponentRegistry, close_component
from genai_factory.gateway.config import GatewaySettings, RateLimitSettings, load_gateway_settings
from genai_factory.gateway.deployment import Capabilities, Deployment
from genai_factory.gateway.failover import Failover, RetryPolicy
from genai_factory.gateway.metrics import GatewayMetrics
from genai_factory.gateway.observe import GenAITracer, RequestObserver
from genai_factory.gateway.pipeline import (
    Admit,
    Authenticate,
    Call,
    LookUp,
    Observe,
    Pipeline,
    Route,
    ScreenInput,
    ScreenOutput,
    Store,
)
from genai_factory.gateway.providers import build_provider
from genai_factory.gateway.providers.base import Timeouts
from genai_factory.gateway.ratelimit import (
    Admission,
    RateLimitRule,
    SlidingWindowLimiter,
    TokenBucketLimiter,
)
from genai_factory.gateway.routing import POLICIES, ModelGroup, Router, RouteRequest, RoutingPolicy
from genai_factory.gateway.usage import UsageLedger, cost_of
from genai_factory.shared.contracts import (
    Authenticator,
    Authorizer,
    BudgetPolicy,
    Guard,
    RateLimiter,
    ResponseCache,
    SpendLedger,
)
from genai_factory.shared.errors import ConfigError, Conflict

__all__ = ["Gateway", "Runtime", "build_mounts", "build_pipeline_parts", "build_router"]

logger = logging.getLogger("genai_factory.gateway")

_PIPELINE_FIELDS = (
    "auth",
    "rate_limits",
    "cache",
    "guards",
    "budget",
    "ledger",
    "observers",
    "telemetry",
    "redis",
    "stream_screen_chars",
)
_START_ONLY_FIELDS = ("components", "mounts")


@dataclass
class Runtime:
    """One consistent set of deployments, router and pipeline."""

    settings: GatewaySettings
    router: Router
    pipeline: Pipeline
    deployment_settings: dict[str, Any] = field(default_factory=dict)
    closeables: list[Any] = field(default_factory=list)


def _policy(name: str, where: str) -> RoutingPolicy:
    cls = POLICIES.get(name)
    if cls is None:
        raise ConfigError(
            f"'{where}': unknown routing strategy '{name}' (known: {', '.join(sorted(POLICIES))})",
            param=where,
        )
    return cls()


def _deployment(
    settings: GatewaySettings,
    index: int,
    reuse: Deployment | None,
    registry: ComponentRegistry,
) -> Deployment:
    spec = settings.deployments[index]
    if reuse is not None:
        return reuse
    timeouts = spec.timeouts
    return Deployment(
        name=spec.name,
        model=spec.model,
        provider=build_provider(spec, registry),
        provider_kind=spec.provider,
        timeouts=Timeouts(timeouts.connect_s, timeouts.ttft_s, timeouts.idle_s, timeouts.total_s),
        breaker=CircuitBreaker(**settings.breaker.model_dump()),
        capabilities=Capabilities(
            context_window=spec.context_window,
            tools=spec.supports_tools,
            json_mode=spec.supports_json,
            vision=spec.supports_vision,
        ),
        input_cost_per_token=spec.input_cost_per_mtok / 1e6,
        output_cost_per_token=spec.output_cost_per_mtok / 1e6,
        weight=spec.weight,
        max_in_flight=spec.max_in_flight,
    )


def build_router(
    settings: GatewaySettings,
    previous: Runtime | None = None,
    registry: ComponentRegistry | None = None,
) -> tuple[Router, dict[str, Any]]:
    """The router for ``settings``, reusing unchanged deployments of ``previous``."""
    registry = registry or ComponentRegistry()
    kept: dict[str, Any] = {}
    deployments: dict[str, list[Deployment]] = {}
    for index, spec in enumerate(settings.deployments):
        reuse = None
        if previous is not None:
            old = previous.deployment_settings.get(spec.name)
            if old is not None and old[0] == (spec, settings.breaker):
                reuse = old[1]
        deployment = _deployment(settings, index, reuse, registry)
        kept[spec.name] = ((spec, settings.breaker), deployment)
        deployments.setdefault(spec.model, []).append(deployment)
    model_settings = {m.name: m for m in settings.models}
    groups = []
    for model, members in deployments.items():
        options = model_settings.get(model)
        groups.append(
            ModelGroup(
                name=model,
                deployments=members,
                fallbacks=list(options.fallbacks) if options else [],
                context_window_fallbacks=list(options.context_window_fallbacks) if options else [],
                content_policy_fallbacks=list(options.content_policy_fallbacks) if options else [],
                policy=_policy(options.strategy, f"models.{model}.strategy")
                if options and options.strategy
                else None,
            )
        )
    if settings.routing.policy is not None:
        policy: RoutingPolicy = registry.build(
            settings.routing.policy, RoutingPolicy, where="routing.policy"
        )
    else:
        policy = _policy(settings.routing.strategy, "routing.strategy")
    return Router(groups, policy=policy), kept


def _limiter(settings: GatewaySettings, rule: RateLimitSettings, limit: int) -> RateLimiter:
    if rule.backend == "redis":
        from genai_factory.gateway.redis_ratelimit import (
            RedisSlidingWindowLimiter,
            RedisTokenBucketLimiter,
        )

        if settings.redis.url is None:
            raise ConfigError(
                "a redis rate limit needs 'redis.url' (or GF_REDIS__URL)", param="redis.url"
            )
        url = settings.redis.url.get_secret_value()
        prefix = settings.redis.key_prefix + "rl:"
        if rule.algorithm == "token_bucket":
            return RedisTokenBucketLimiter(url, limit, rule.window_s, key_prefix=prefix)
        return RedisSlidingWindowLimiter(url, limit, rule.window_s, key_prefix=prefix)
    if rule.algorithm == "token_bucket":
        return TokenBucketLimiter(limit, rule.window_s)
    return SlidingWindowLimiter(limit, rule.window_s)


@dataclass
class PipelineParts:
    """The configured components, before they are put into stages."""

    authenticator: Authenticator | None
    admission: Admission | None
    budget: BudgetPolicy | None
    guards: list[Guard]
    cache: ResponseCache | None
    ledger: SpendLedger | None
    observers: list[RequestObserver]
    closeables: list[Any]
    ledgers: list[SpendLedger] = field(default_factory=list)
    tracer: GenAITracer | None = None
    authorizer: Authorizer | None = None


def build_pipeline_parts(
    settings: GatewaySettings, registry: ComponentRegistry | None = None
) -> PipelineParts:
    """Every pipeline component from ``settings`` (built-ins unless a component is named)."""
    registry = registry or ComponentRegistry()
    authenticator: Authenticator | None = None
    if settings.auth.component is not None:
        authenticator = registry.build(settings.auth.component, Authenticator, where="auth")
    else:
        api_keys = APIKeyAuthenticator(
            settings.auth.keys, settings.auth.keys_env, settings.auth.required
        )
        authenticator = api_keys if api_keys.required else None
    authorizer = (
        registry.build(settings.auth.authorizer, Authorizer, where="auth.authorizer")
        if settings.auth.authorizer is not None
        else None
    )
    rules: list[RateLimitRule] = []
    for rule in settings.rate_limits:
        if rule.rpm is not None:
            rules.append(RateLimitRule(rule.scope, "requests", _limiter(settings, rule, rule.rpm)))
        if rule.tpm is not None:
            rules.append(RateLimitRule(rule.scope, "tokens", _limiter(settings, rule, rule.tpm)))
    cache: ResponseCache | None = None
    if settings.cache.component is not None:
        cache = registry.build(settings.cache.component, ResponseCache, where="cache.component")
    elif settings.cache.enabled:
        cache = ExactMatchCache(settings.cache.max_entries, settings.cache.ttl_s)
    ledger_specs = settings.ledger if isinstance(settings.ledger, list) else [settings.ledger]
    ledgers: list[SpendLedger] = [
        registry.build(
            spec, SpendLedger, where="ledger" if len(ledger_specs) == 1 else f"ledger.{i}"
        )
        for i, spec in enumerate(ledger_specs)
        if spec is not None
    ]
    budget = (
        registry.build(settings.budget, BudgetPolicy, where="budget")
        if settings.budget is not None
        else None
    )
    guards: list[Guard] = [
        registry.build(spec, Guard, where=f"guards.{i}") for i, spec in enumerate(settings.guards)
    ]
    observers: list[RequestObserver] = [
        registry.build(spec, RequestObserver, where=f"observers.{i}")
        for i, spec in enumerate(settings.observers)
    ]
    tracer = (
        registry.build(settings.telemetry, GenAITracer, where="telemetry")
        if settings.telemetry is not None
        else None
    )
    # what this build owns and must close: limiters, and components not shared by name
    built: list[Any] = [
        authenticator,
        authorizer,
        cache,
        budget,
        *ledgers,
        *guards,
        *observers,
        tracer,
    ]
    closeables: list[Any] = [r.limiter for r in rules if hasattr(r.limiter, "aclose")]
    seen: set[int] = set()
    for part in built:  # by identity: components need not be hashable
        if part is None or id(part) in seen or registry.owns(part) or not _closable(part):
            continue
        seen.add(id(part))
        closeables.append(part)
    return PipelineParts(
        authenticator=authenticator,
        admission=Admission(rules) if rules else None,
        budget=budget,
        guards=guards,
        cache=cache,
        ledger=UsageLedger(),
        observers=observers,
        closeables=closeables,
        ledgers=ledgers,
        tracer=tracer,
        authorizer=authorizer,
    )


def _closable(part: Any) -> bool:
    return any(callable(getattr(part, name, None)) for name in ("aclose", "close", "shutdown"))


def build_mounts(settings: GatewaySettings, registry: ComponentRegistry) -> list[tuple[str, Any]]:
    """The ASGI apps to serve beside the API: ``(path, app)`` in config order."""
    mounts = []
    for i, mount in enumerate(settings.mounts):
        app: Any = registry.build(mount.app, where=f"mounts.{i}.app")
        if not callable(app):
            raise ConfigError(
                f"'mounts.{i}.app' did not build an ASGI app (got {type(app).__name__})",
                param=f"mounts.{i}.app",
            )
        mounts.append((mount.path, app))
    return mounts


def _estimator(router: Router) -> Any:
    def estimate(route: RouteRequest) -> Decimal:
        """The priciest deployment's price for the request: a reservation must cover any."""
        group = router.groups.get(route.model)
        if group is None:
            return Decimal(0)
        return max(
            (
                cost_of(
                    d.input_cost_per_token * 1e6,
                    d.output_cost_per_token * 1e6,
                    route.prompt_tokens,
                    route.output_tokens,
                )
                for d in group.deployments
            ),
            default=Decimal(0),
        )

    return estimate


def _assemble(
    settings: GatewaySettings, router: Router, parts: PipelineParts, metrics: GatewayMetrics
) -> Pipeline:
    retry = RetryPolicy(**settings.retry.model_dump())
    tracer = parts.tracer
    return Pipeline(
        authenticate=Authenticate(parts.authenticator, parts.authorizer),
        admit=Admit(parts.admission, parts.budget, _estimator(router)),
        screen_input=ScreenInput(parts.guards, tracer),
        look_up=LookUp(parts.cache, tracer),
        route=Route(router),
        call=Call(Failover(retry)),
        screen_output=ScreenOutput(parts.guards, settings.stream_screen_chars, tracer),
        store=Store(parts.cache, parts.ledger, parts.budget, parts.ledgers),
        observe=Observe([*parts.observers, metrics], tracer),
    )


class Gateway:
    """The live gateway: settings, the current runtime, metrics; reload and close.

    Args:
        settings: validated settings.
        config_path: the file they came from (needed for reload).
    """

    def __init__(self, settings: GatewaySettings, config_path: str | Path | None = None) -> None:
        self.config_path = Path(config_path) if config_path else None
        self.metrics = GatewayMetrics(
            lambda: self.runtime.router.deployments, lambda: self.runtime.router.groups
        )
        self._parts: PipelineParts | None = None
        self.registry = ComponentRegistry(settings.components)
        self.mounts = build_mounts(settings, self.registry)
        self.runtime = self._build(settings, None)
        self._draining: set[asyncio.Task[None]] = set()
        self._config_mtime = self._mtime()

    @classmethod
    def from_file(cls, path: str | Path) -> Gateway:
        return cls(load_gateway_settings(path), path)

    def _build(self, settings: GatewaySettings, previous: Runtime | None) -> Runtime:
        if previous is not None:
            for name in _START_ONLY_FIELDS:
                if getattr(previous.settings, name) != getattr(settings, name):
                    raise ConfigError(
                        f"'{name}' cannot change while the gateway runs: restart it", param=name
                    )
        router, kept = build_router(settings, previous, self.registry)
        same_parts = previous is not None and all(
            getattr(previous.settings, name) == getattr(settings, name) for name in _PIPELINE_FIELDS
        )
        if not same_parts or self._parts is None:
            self._parts = build_pipeline_parts(settings, self.registry)
        pipeline = _assemble(settings, router, self._parts, self.metrics)
        return Runtime(settings, router, pipeline, kept, list(self._parts.closeables))

    @property
    def settings(self) -> GatewaySettings:
        return self.runtime.settings

    @property
    def ledger(self) -> SpendLedger | None:
        return self.runtime.pipeline.store.ledger

    def _mtime(self) -> float | None:
        try:
            return self.config_path.stat().st_mtime if self.config_path else None
        except OSError:
            return None

    async def reload(self, settings: GatewaySettings | None = None) -> dict[str, Any]:
        """Swap in a runtime built from ``settings`` (default: the config file, re-read)."""
        if settings is None:
            if self.config_path is None:
                raise Conflict("nothing to reload from: the gateway was not started with a file")
            settings = load_gateway_settings(self.config_path)
        previous = self.runtime
        old_parts = self._parts
        runtime = self._build(settings, previous)
        self.runtime = runtime
        self._config_mtime = self._mtime()
        kept_ids = {id(entry[1]) for entry in runtime.deployment_settings.values()}
        removed = [
            entry[1]
            for entry in previous.deployment_settings.values()
            if id(entry[1]) not in kept_ids
        ]
        closeables: list[Any] = [d.provider for d in removed]
        if old_parts is not None and old_parts is not self._parts:
            closeables += old_parts.closeables
        if closeables:
            task = asyncio.create_task(self._drain_and_close(removed, closeables))
            self._draining.add(task)
            task.add_done_callback(self._draining.discard)
        kept = sorted(
            name
            for name, entry in runtime.deployment_settings.items()
            if previous.deployment_settings.get(name, (None, None))[1] is entry[1]
        )
        logger.info("gateway configuration reloaded", extra={"kept": kept})
        return {
            "deployments": sorted(runtime.deployment_settings),
            "kept": kept,
            "removed": sorted(d.name for d in removed),
        }

    async def _drain_and_close(self, deployments: list[Deployment], closeables: list[Any]) -> None:
        deadline = asyncio.get_running_loop().time() + self.settings.drain_timeout_s
        while any(d.in_flight for d in deployments):
            if asyncio.get_running_loop().time() >= deadline:
                break
            await asyncio.sleep(0.05)
        for item in closeables:
            await close_component(item)

    async def watch(self, interval_s: float) -> None:
        """Reload whenever the config file changes (run as a background task)."""
        while True:
            await asyncio.sleep(interval_s)
            mtime = self._mtime()
            if mtime is not None and mtime != self._config_mtime:
                try:
                    await self.reload()
                except Exception:  # a bad edit keeps the running config
                    self._config_mtime = mtime
                    logger.exception("config reload failed; keeping the running configuration")

    async def aclose(self) -> None:
        """Close providers, pipeline components, then the named components (after draining)."""
        for task in list(self._draining):
            with contextlib.suppress(Exception):
                await task
        for deployment in self.runtime.router.deployments:
            with contextlib.suppress(Exception):
                await deployment.provider.aclose()
        for item in self.runtime.closeables:
            await close_component(item)
        await self.registry.aclose()
