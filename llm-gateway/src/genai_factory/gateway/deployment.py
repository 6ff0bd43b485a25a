"""A deployment: one provider endpoint serving a model name, with its timeouts, health and stats.

Deployments sharing a model name form a group the router chooses from. Each one keeps what the
routing strategies read: price per token, capabilities, weight, requests in flight, and EWMAs of
time-to-first-token and total latency; and the circuit breaker the failover honours.

Example:
    >>> stats = LatencyStats(alpha=0.5)
    >>> stats.observe_total(1.0); stats.observe_total(3.0); stats.total_s
    2.0
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from genai_factory.gateway.breaker import CircuitBreaker
from genai_factory.gateway.providers.base import Provider, Timeouts, UpstreamTimeout
from genai_factory.shared.models import ChatCompletionChunk, ChatCompletionRequest

__all__ = ["Capabilities", "Deployment", "LatencyStats"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a deployment can do; the router never sends it a request it cannot serve."""

    context_window: int | None = None
    tools: bool = True
    json_mode: bool = True
    vision: bool = False


@dataclass(slots=True)
class LatencyStats:
    """Exponentially weighted moving averages of TTFT and total latency (None until measured)."""

    alpha: float = 0.3
    ttft_s: float | None = None
    total_s: float | None = None

    def observe_ttft(self, seconds: float) -> None:
        self.ttft_s = seconds if self.ttft_s is None else self._mix(self.ttft_s, seconds)

    def observe_total(self, seconds: float) -> None:
        self.total_s = seconds if self.total_s is None else self._mix(self.total_s, seconds)

    def _mix(self, old: float, new: float) -> float:
        return (1 - self.alpha) * old + self.alpha * new


@dataclass(slots=True)
class DeploymentCounters:
    """What this deployment did: successful calls, failed attempts, tokens served."""

    served: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(eq=False)
class Deployment:
    """One upstream endpoint for a model name.

    ``complete``/``stream``/``run`` apply the deployment's timeouts around the provider's call:
    a total deadline for answers, and for streams a deadline for the first chunk (TTFT), one for
    each following chunk (a stalled stream) and the total.
    """

    name: str
    model: str
    provider: Provider
    provider_kind: str = "openai"
    timeouts: Timeouts = field(default_factory=Timeouts)
    breaker: CircuitBreaker = field(default_factory=CircuitBreaker)
    capabilities: Capabilities = field(default_factory=Capabilities)
    input_cost_per_token: float = 0.0
    output_cost_per_token: float = 0.0
    weight: float = 1.0
    max_in_flight: int | None = None
    stats: LatencyStats = field(default_factory=LatencyStats)
    counters: DeploymentCounters = field(default_factory=DeploymentCounters)
    in_flight: int = 0

    def has_room(self) -> bool:
        return self.max_in_flight is None or self.in_flight < self.max_in_flight

    def estimated_cost(self, prompt_tokens: int, output_tokens: int) -> float:
        return (
            prompt_tokens * self.input_cost_per_token + output_tokens * self.output_cost_per_token
        )

    async def run(self, call: Callable[[Provider], Awaitable[T]]) -> T:
        """``call(provider)`` under the total timeout."""
        try:
            async with asyncio.timeout(self.timeouts.total_s):
                return await call(self.provider)
        except TimeoutError:
            raise self._timeout("no answer", self.timeouts.total_s) from None

    def stream(self, request: ChatCompletionRequest) -> AsyncGenerator[ChatCompletionChunk, None]:
        """The provider's chat chunks under the TTFT, idle and total timeouts."""
        return self.stream_with(lambda provider: provider.stream(request))

    async def stream_with(
        self, open_stream: Callable[[Provider], AsyncIterator[ChatCompletionChunk]]
    ) -> AsyncGenerator[ChatCompletionChunk, None]:
        """``open_stream(provider)``'s chunks under the TTFT, idle and total timeouts."""
        chunks = aiter(open_stream(self.provider))
        deadline = time.monotonic() + self.timeouts.total_s
        wait, what = self.timeouts.ttft_s, "no first chunk"
        try:
            while True:
                left = deadline - time.monotonic()
                budget = min(wait, left)
                try:
                    async with asyncio.timeout(budget):
                        chunk = await anext(chunks)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    limit = wait if wait <= left else self.timeouts.total_s
                    reason = what if wait <= left else "stream exceeded the total timeout"
                    raise self._timeout(reason, limit) from None
                yield chunk
                wait, what = self.timeouts.idle_s, "stream stalled"
        finally:
            closer = getattr(chunks, "aclose", None)
            if closer is not None:
                await closer()

    def _timeout(self, what: str, seconds: float) -> UpstreamTimeout:
        return UpstreamTimeout(
            f"{self.name}: {what} within {seconds:g}s",
            retryable=True,
            provider=self.provider_kind,
            code="upstream_timeout",
        )

    def snapshot(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": self.model,
            "provider": self.provider_kind,
            "breaker": self.breaker.snapshot(),
            "in_flight": self.in_flight,
            "ewma_ttft_ms": _ms(self.stats.ttft_s),
            "ewma_latency_ms": _ms(self.stats.total_s),
            "served": self.counters.served,
            "failures": self.counters.failures,
            "prompt_tokens": self.counters.prompt_tokens,
            "completion_tokens": self.counters.completion_tokens,
            "capabilities": {
                "context_window": self.capabilities.context_window,
                "tools": self.capabilities.tools,
                "json_mode": self.capabilities.json_mode,
                "vision": self.capabilities.vision,
            },
        }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)
