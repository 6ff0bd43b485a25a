"""Routing: which deployment of a model serves a request, and in what order to try the rest.

A :class:`Router` holds model groups (deployments under one public model name, plus fallback
chains). For each request it builds a :class:`Plan`: deployments that can serve it (capability
filter: context window, tools, JSON mode, vision) and are healthy (breaker closed or probing),
ranked by a routing policy; then the group's fallbacks. A policy is any object with
``rank(candidates, request) -> list[Deployment]``, so a custom one is built from config through
the shared factory.

Policies: ``ordered`` (config order), ``cost`` (cheapest estimate first), ``latency`` (lowest EWMA
first; unmeasured ones get tried first), ``capability`` (the smallest context window that fits),
``weighted`` (random, proportional to weight), ``least_busy`` (fewest requests in flight).

Examples:
    >>> from genai_factory.gateway.providers.openai import OpenAICompatibleProvider
    >>> def dep(name, price):
    ...     return Deployment(name=name, model="m", input_cost_per_token=price,
    ...                       provider=OpenAICompatibleProvider("http://127.0.0.1:1", model="m"))
    >>> router = Router([ModelGroup("m", [dep("pricey", 2e-6), dep("cheap", 1e-7)])],
    ...                 policy=CostPolicy())
    >>> plan = router.plan(RouteRequest(model="m", prompt_tokens=100))
    >>> [plan.next(None).name, plan.next(None).name, plan.next(None)]
    ['cheap', 'pricey', None]
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from genai_factory.gateway.deployment import Deployment
from genai_factory.gateway.providers.base import CONTENT_FILTER, CONTEXT_LENGTH
from genai_factory.shared.errors import (
    BadRequest,
    GFError,
    NotFound,
    ProviderError,
    ServiceUnavailable,
)
from genai_factory.shared.models import ChatCompletionRequest

__all__ = [
    "POLICIES",
    "CapabilityPolicy",
    "CostPolicy",
    "LatencyPolicy",
    "LeastBusyPolicy",
    "ModelGroup",
    "OrderedPolicy",
    "Plan",
    "RouteHints",
    "RouteRequest",
    "Router",
    "RoutingPolicy",
    "WeightedPolicy",
    "estimate_tokens",
    "route_request_for",
]

DEFAULT_OUTPUT_TOKENS = 256


@dataclass(frozen=True, slots=True)
class RouteHints:
    """Per-request routing hints from the ``x-gf-route`` header.

    ``deployment=NAME`` pins one deployment; ``strategy=NAME`` picks a policy for this request;
    ``fallbacks=off`` keeps the request on its own model group.

    >>> RouteHints.parse("strategy=cost, fallbacks=off")
    RouteHints(deployment=None, strategy='cost', fallbacks=False)
    """

    deployment: str | None = None
    strategy: str | None = None
    fallbacks: bool = True

    @classmethod
    def parse(cls, header: str | None) -> RouteHints:
        if not header:
            return _NO_HINTS
        values: dict[str, str] = {}
        for part in header.split(","):
            name, _, value = part.partition("=")
            name, value = name.strip().lower(), value.strip()
            if name not in {"deployment", "strategy", "fallbacks"} or not value:
                raise BadRequest(
                    "x-gf-route takes comma-separated deployment=NAME, strategy=NAME, "
                    "fallbacks=on|off",
                    param="x-gf-route",
                )
            values[name] = value
        return cls(
            deployment=values.get("deployment"),
            strategy=values.get("strategy"),
            fallbacks=values.get("fallbacks", "on").lower() not in {"off", "false", "0", "no"},
        )


_NO_HINTS = RouteHints()


@dataclass(frozen=True, slots=True)
class RouteRequest:
    """What routing needs to know about a request."""

    model: str
    prompt_tokens: int = 0
    output_tokens: int = DEFAULT_OUTPUT_TOKENS
    needs_tools: bool = False
    needs_json: bool = False
    needs_vision: bool = False
    stream: bool = False
    hints: RouteHints = _NO_HINTS


def estimate_tokens(text_chars: int) -> int:
    """A cheap token estimate (about four characters per token), never zero for text."""
    return (text_chars + 3) // 4


def route_request_for(
    request: ChatCompletionRequest, hints: RouteHints = _NO_HINTS
) -> RouteRequest:
    """The routing view of a chat request: token estimate and the capabilities it needs."""
    chars = 0
    vision = False
    for message in request.messages:
        chars += 16  # role and framing tokens
        if isinstance(message.content, str):
            chars += len(message.content)
        elif message.content is not None:
            for part in message.content:
                if part.type == "image_url":
                    vision = True
                    chars += 1024
                else:
                    chars += len(part.text or "")
    if request.tools:
        chars += sum(len(str(tool.function.parameters or "")) + 64 for tool in request.tools)
    response_format = request.response_format
    return RouteRequest(
        model=request.model,
        prompt_tokens=estimate_tokens(chars),
        output_tokens=request.output_limit or DEFAULT_OUTPUT_TOKENS,
        needs_tools=bool(request.tools) and request.tool_choice != "none",
        needs_json=response_format is not None and response_format.type != "text",
        needs_vision=vision,
        stream=request.stream,
        hints=hints,
    )


@runtime_checkable
class RoutingPolicy(Protocol):
    """Orders the candidate deployments for one request, best first."""

    def rank(self, candidates: Sequence[Deployment], request: RouteRequest) -> list[Deployment]: ...


class OrderedPolicy:
    """Config order: the first healthy deployment always wins (a priority list)."""

    def rank(self, candidates: Sequence[Deployment], request: RouteRequest) -> list[Deployment]:
        return list(candidates)


class CostPolicy:
    """Cheapest estimated cost first (per-token prices times the request's token estimate)."""

    def rank(self, candidates: Sequence[Deployment], request: RouteRequest) -> list[Deployment]:
        return sorted(
            candidates,
            key=lambda d: d.estimated_cost(request.prompt_tokens, request.output_tokens),
        )


class LatencyPolicy:
    """Lowest EWMA first: TTFT for streams, total latency otherwise; unmeasured first (explore)."""

    def rank(self, candidates: Sequence[Deployment], request: RouteRequest) -> list[Deployment]:
        def key(d: Deployment) -> float:
            value = d.stats.ttft_s if request.stream else d.stats.total_s
            if value is None:
                value = d.stats.total_s if request.stream else None
            return -1.0 if value is None else value

        return sorted(candidates, key=key)


class CapabilityPolicy:
    """Best fit: the smallest context window that holds the request (big ones stay free)."""

    def rank(self, candidates: Sequence[Deployment], request: RouteRequest) -> list[Deployment]:
        return sorted(candidates, key=lambda d: d.capabilities.context_window or 2**62)


class WeightedPolicy:
    """A random order where a deployment's chance to come first is proportional to its weight."""

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed
        self._random = random.Random(seed)  # noqa: S311 - load spreading, not security

    def rank(self, candidates: Sequence[Deployment], request: RouteRequest) -> list[Deployment]:
        # Efraimidis-Spirakis: sort by u^(1/w), a weighted shuffle in one pass
        def key(d: Deployment) -> float:
            weight = max(d.weight, 1e-9)
            return float(self._random.random() ** (1.0 / weight))

        return sorted(candidates, key=key, reverse=True)


class LeastBusyPolicy:
    """Fewest requests in flight first; ties broken at random."""

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed
        self._random = random.Random(seed)  # noqa: S311 - tie breaking, not security

    def rank(self, candidates: Sequence[Deployment], request: RouteRequest) -> list[Deployment]:
        return sorted(candidates, key=lambda d: (d.in_flight, self._random.random()))


POLICIES: dict[str, type[RoutingPolicy]] = {
    "ordered": OrderedPolicy,
    "cost": CostPolicy,
    "latency": LatencyPolicy,
    "capability": CapabilityPolicy,
    "weighted": WeightedPolicy,
    "least_busy": LeastBusyPolicy,
}


@dataclass
class ModelGroup:
    """Deployments under one public model name, with its own policy and fallback chains."""

    name: str
    deployments: list[Deployment]
    fallbacks: list[str] = field(default_factory=list)
    context_window_fallbacks: list[str] = field(default_factory=list)
    content_policy_fallbacks: list[str] = field(default_factory=list)
    policy: RoutingPolicy | None = None


def _capable(deployment: Deployment, request: RouteRequest) -> str | None:
    """Why ``deployment`` cannot serve ``request``, or None when it can."""
    caps = deployment.capabilities
    if caps.context_window is not None and (
        request.prompt_tokens + min(request.output_tokens, caps.context_window // 2)
        > caps.context_window
    ):
        return CONTEXT_LENGTH
    if request.needs_tools and not caps.tools:
        return "tools"
    if request.needs_json and not caps.json_mode:
        return "json_mode"
    if request.needs_vision and not caps.vision:
        return "vision"
    return None


class Router:
    """Model groups and the policies that rank their deployments."""

    def __init__(
        self,
        groups: Iterable[ModelGroup],
        policy: RoutingPolicy | None = None,
        strategies: Mapping[str, RoutingPolicy] | None = None,
    ) -> None:
        self.groups = {group.name: group for group in groups}
        self.policy = policy or LatencyPolicy()
        self.strategies = dict(strategies) if strategies is not None else _default_strategies()
        for group in self.groups.values():
            for name in (
                *group.fallbacks,
                *group.context_window_fallbacks,
                *group.content_policy_fallbacks,
            ):
                if name not in self.groups:
                    raise ValueError(f"model '{group.name}' falls back to unknown model '{name}'")

    @property
    def deployments(self) -> list[Deployment]:
        return [d for group in self.groups.values() for d in group.deployments]

    def group(self, model: str) -> ModelGroup:
        group = self.groups.get(model)
        if group is None:
            raise NotFound(f"model '{model}' does not exist", param="model", code="model_not_found")
        return group

    def plan(self, request: RouteRequest) -> Plan:
        """The order to try deployments in for ``request`` (NotFound for an unknown model)."""
        group = self.group(request.model)
        policy = self._policy_for(group, request.hints)
        return Plan(self, group, request, policy)

    def _policy_for(self, group: ModelGroup, hints: RouteHints) -> RoutingPolicy:
        if hints.strategy is not None:
            policy = self.strategies.get(hints.strategy)
            if policy is None:
                raise BadRequest(
                    f"unknown routing strategy '{hints.strategy}' "
                    f"(known: {', '.join(sorted(self.strategies))})",
                    param="x-gf-route",
                )
            return policy
        return group.policy or self.policy

    def rank(
        self, group: ModelGroup, request: RouteRequest, policy: RoutingPolicy
    ) -> tuple[list[Deployment], set[str]]:
        """Healthy, capable deployments of ``group`` in policy order; and why others were left out."""
        reasons: set[str] = set()
        candidates: list[Deployment] = []
        for deployment in group.deployments:
            if request.hints.deployment and deployment.name != request.hints.deployment:
                continue
            why = _capable(deployment, request)
            if why is None and not deployment.breaker.available():
                why = "unhealthy"
            if why is None and not deployment.has_room():
                why = "busy"
            if why is None:
                candidates.append(deployment)
            else:
                reasons.add(why)
        return (policy.rank(candidates, request) if len(candidates) > 1 else candidates), reasons


def _default_strategies() -> dict[str, RoutingPolicy]:
    return {name: cls() for name, cls in POLICIES.items()}


class Plan:
    """The deployments to try for one request, walked by the failover loop with :meth:`next`.

    After a failure, ``next(error)`` decides: a context-length error jumps to the
    context-window fallbacks, a content-filter error to the content-policy fallbacks, a client
    mistake (bad request) stops; anything else moves to the next deployment, then to the next
    fallback model.
    """

    def __init__(
        self, router: Router, group: ModelGroup, request: RouteRequest, policy: RoutingPolicy
    ) -> None:
        self._router = router
        self._request = request
        self._policy = policy
        self._seen: set[str] = set()
        self._queue: list[Deployment] = []
        self._fallbacks: list[str] = list(group.fallbacks) if request.hints.fallbacks else []
        self.left_out: set[str] = set()
        self.tried = 0
        self._load([group.name])
        if not self._queue and CONTEXT_LENGTH in self.left_out and request.hints.fallbacks:
            self._load(group.context_window_fallbacks)

    def _load(self, models: Iterable[str]) -> None:
        for model in models:
            if model in self._seen:
                continue
            self._seen.add(model)
            group = self._router.groups[model]
            policy = self._policy if model == self._request.model else group.policy
            ranked, reasons = self._router.rank(group, self._request, policy or self._router.policy)
            self._queue.extend(ranked)
            self.left_out |= reasons

    def _fallback_list(self, code: str | None) -> list[str] | None:
        groups = self._router.groups
        if code == CONTEXT_LENGTH:
            return [n for g in self._seen for n in groups[g].context_window_fallbacks]
        if code == CONTENT_FILTER:
            return [n for g in self._seen for n in groups[g].content_policy_fallbacks]
        return None

    def next(self, error: ProviderError | None) -> Deployment | None:
        """The next deployment to try after ``error`` (None: stop and report the error)."""
        if error is not None:
            special = self._fallback_list(error.code)
            if special is not None:
                if not self._request.hints.fallbacks:
                    return None
                self._queue = []
                self._load(special)
                return self._pop()
            if _client_fault(error):
                return None
        while not self._queue and self._fallbacks:
            self._load([self._fallbacks.pop(0)])
        return self._pop()

    def _pop(self) -> Deployment | None:
        if not self._queue:
            return None
        self.tried += 1
        return self._queue.pop(0)

    def exhausted_error(self, last: ProviderError | None) -> GFError:
        """The error to answer with once the plan has nothing left to try."""
        if last is not None and last.code != "circuit_open":
            return last
        if CONTEXT_LENGTH in self.left_out:
            return BadRequest(
                f"the request does not fit the context window of any '{self._request.model}' "
                "deployment",
                param="messages",
                code=CONTEXT_LENGTH,
            )
        capability = self.left_out & {"tools", "json_mode", "vision"}
        if capability and not self.left_out & {"unhealthy", "busy"}:
            return BadRequest(
                f"no '{self._request.model}' deployment supports {', '.join(sorted(capability))}",
                param="model",
                code="unsupported_capability",
            )
        if self._request.hints.deployment and not self.left_out:
            return NotFound(
                f"deployment '{self._request.hints.deployment}' does not serve "
                f"'{self._request.model}'",
                param="x-gf-route",
            )
        waits = [
            d.breaker.retry_in_s()
            for name in self._seen
            for d in self._router.groups[name].deployments
            if d.breaker.state == "open"
        ]
        return ServiceUnavailable(
            f"no healthy deployment for '{self._request.model}' right now",
            retry_after=min(waits) if waits else 1.0,
            code="no_healthy_deployment",
        )


def _client_fault(error: ProviderError) -> bool:
    """The caller's request is at fault (another deployment would answer the same)."""
    return error.upstream_status in (400, 413, 422)
