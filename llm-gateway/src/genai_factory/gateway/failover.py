"""Failover: retries with backoff and jitter, Retry-After, circuit breakers, fallback chains, streams.

:class:`Failover` walks a routing :class:`~genai_factory.gateway.routing.Plan`. On each deployment
it retries retryable failures (exponential backoff with jitter, or the upstream's Retry-After when
that is short enough), records every attempt, and feeds the deployment's circuit breaker. When a
deployment gives up, the plan picks the next one or a fallback model.

Streams fail over only before the first token: until then chunks are held back and a failure
switches deployment invisibly. After it, a failure ends the stream with
:class:`StreamInterrupted` so the API can send an explicit error event, never a clean finish.

Example:
    >>> policy = RetryPolicy(max_retries=2, base_delay_s=0.1, jitter=0.0)
    >>> policy.delay(0, None), policy.delay(2, None), policy.delay(0, 3.0), policy.delay(0, 60.0)
    (0.1, 0.4, 3.0, None)
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from genai_factory.gateway.deployment import Deployment
from genai_factory.gateway.providers.base import Provider
from genai_factory.gateway.routing import Plan
from genai_factory.shared.errors import GFError, ProviderError
from genai_factory.shared.models import ChatCompletionChunk, ChatCompletionRequest

__all__ = [
    "Attempt",
    "CallRecord",
    "Failover",
    "LiveStream",
    "RetryPolicy",
    "StreamInterrupted",
]

T = TypeVar("T")
StreamOpener = Callable[[Provider], AsyncIterator[ChatCompletionChunk]]


def _chat_opener(request: ChatCompletionRequest) -> StreamOpener:
    return lambda provider: provider.stream(request)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to wait before trying the same deployment again.

    Args:
        max_retries: retries per deployment after its first attempt.
        base_delay_s: the first backoff; it doubles per retry up to ``max_delay_s``.
        max_delay_s: the longest backoff.
        max_retry_after_s: a Retry-After longer than this moves on to the next deployment.
        jitter: the fraction of each backoff drawn at random (0: none, 1: "full jitter").
        seed: seeds the jitter (tests).
    """

    max_retries: int = 2
    base_delay_s: float = 0.25
    max_delay_s: float = 8.0
    max_retry_after_s: float = 30.0
    jitter: float = 0.5
    seed: int | None = None
    _random: random.Random = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_random", random.Random(self.seed))  # noqa: S311 - jitter

    def delay(self, retry: int, retry_after: float | None) -> float | None:
        """Seconds to wait before retry number ``retry`` (0-based); None: do not wait, move on."""
        if retry_after is not None:
            return retry_after if retry_after <= self.max_retry_after_s else None
        backoff = min(self.max_delay_s, self.base_delay_s * (2**retry))
        return float(backoff * (1.0 - self.jitter * self._random.random()))


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try on one deployment: how it ended and how long it took."""

    deployment: str
    ok: bool
    duration_s: float
    error: str | None = None
    upstream_status: int | None = None


@dataclass
class CallRecord:
    """What happened to one request downstream of routing: attempts and who served it."""

    attempts: list[Attempt] = field(default_factory=list)
    served_by: Deployment | None = None
    upstream_s: float = 0.0
    ttft_s: float | None = None
    streaming: bool = False  # a stream is being served (its attempt is recorded at the end)

    @property
    def attempt_count(self) -> int:
        return len(self.attempts) + int(self.streaming)


class StreamInterrupted(Exception):
    """A stream failed after its first token was sent; ``error`` says why."""

    def __init__(self, error: GFError) -> None:
        super().__init__(str(error))
        self.error = error


def _is_token(chunk: ChatCompletionChunk) -> bool:
    """The chunk carries something the client must see (text, tool call, finish, usage)."""
    if chunk.usage is not None and not chunk.choices:
        return True
    for choice in chunk.choices:
        delta = choice.delta
        if delta.content or delta.tool_calls or choice.finish_reason:
            return True
    return False


class Failover:
    """Runs calls along routing plans with retries, breakers and fallbacks."""

    def __init__(
        self,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self.retry = retry or RetryPolicy()
        self._sleep = sleep

    async def call(
        self,
        plan: Plan,
        record: CallRecord,
        call: Callable[[Provider], Awaitable[T]],
    ) -> T:
        """``call(provider)`` on the first deployment of the plan that answers."""
        error: ProviderError | None = None
        while (deployment := plan.next(error)) is not None:
            try:
                return await self._call_on(deployment, record, call)
            except ProviderError as exc:
                error = exc
        raise plan.exhausted_error(error)

    async def _call_on(
        self,
        deployment: Deployment,
        record: CallRecord,
        call: Callable[[Provider], Awaitable[T]],
    ) -> T:
        retry = 0
        while True:
            started = self._admit(deployment)
            try:
                result = await deployment.run(call)
            except ProviderError as exc:
                self._failed(deployment, record, exc, started)
                delay = self._retry_delay(exc, retry)
            except BaseException:
                deployment.breaker.release()
                raise
            else:
                elapsed = self._succeeded(deployment, record, started)
                deployment.stats.observe_total(elapsed)
                return result
            finally:
                deployment.in_flight -= 1
            await self._sleep(delay)  # not counted as in flight while waiting
            retry += 1

    async def open_stream(
        self,
        plan: Plan,
        record: CallRecord,
        request: ChatCompletionRequest | StreamOpener,
    ) -> LiveStream:
        """A stream whose first token has arrived, from the first deployment that produced one.

        ``request``: a chat request, or a function opening another kind of stream on a provider
        (streamed legacy completions).
        """
        opener = _chat_opener(request) if isinstance(request, ChatCompletionRequest) else request
        error: ProviderError | None = None
        while (deployment := plan.next(error)) is not None:
            try:
                return await self._open_on(deployment, record, opener)
            except ProviderError as exc:
                error = exc
        raise plan.exhausted_error(error)

    async def _open_on(
        self, deployment: Deployment, record: CallRecord, opener: StreamOpener
    ) -> LiveStream:
        retry = 0
        while True:
            started = self._admit(deployment)
            chunks = deployment.stream_with(opener)
            head: list[ChatCompletionChunk] = []
            try:
                async for chunk in chunks:
                    head.append(chunk)
                    if _is_token(chunk):
                        break
            except ProviderError as exc:
                deployment.in_flight -= 1
                self._failed(deployment, record, exc, started)
                await self._sleep(self._retry_delay(exc, retry))
                retry += 1
                continue
            except BaseException:
                deployment.in_flight -= 1
                deployment.breaker.release()
                await chunks.aclose()
                raise
            ttft = time.monotonic() - started
            deployment.stats.observe_ttft(ttft)
            record.ttft_s = ttft
            record.upstream_s += ttft  # counted now: the response headers go out before the rest
            record.served_by = deployment
            record.streaming = True
            return LiveStream(self, deployment, record, head, chunks, started)

    def _admit(self, deployment: Deployment) -> float:
        if not deployment.breaker.try_acquire():
            raise ProviderError(
                f"{deployment.name}: circuit open",
                retryable=False,
                provider=deployment.provider_kind,
                code="circuit_open",
                retry_after=deployment.breaker.retry_in_s(),
            )
        deployment.in_flight += 1
        return time.monotonic()

    def _failed(
        self,
        deployment: Deployment,
        record: CallRecord,
        exc: ProviderError,
        started: float,
        counted_s: float = 0.0,
    ) -> None:
        elapsed = time.monotonic() - started
        record.upstream_s += elapsed - counted_s
        record.attempts.append(
            Attempt(deployment.name, False, elapsed, exc.message, exc.upstream_status)
        )
        deployment.counters.failures += 1
        if exc.retryable:
            deployment.breaker.record_failure()
        else:  # the upstream answered properly, it just said no
            deployment.breaker.record_success()

    def _succeeded(
        self, deployment: Deployment, record: CallRecord, started: float, counted_s: float = 0.0
    ) -> float:
        elapsed = time.monotonic() - started
        record.upstream_s += elapsed - counted_s
        record.attempts.append(Attempt(deployment.name, True, elapsed))
        record.served_by = deployment
        deployment.counters.served += 1
        deployment.breaker.record_success()
        return elapsed

    def _retry_delay(self, exc: ProviderError, retry: int) -> float:
        """How long to wait before retrying the same deployment; re-raises to move on."""
        if not exc.retryable or retry >= self.retry.max_retries:
            raise exc
        delay = self.retry.delay(retry, exc.retry_after)
        if delay is None:
            raise exc
        return delay


class LiveStream:
    """A stream after its first token: iterate it for every chunk, the held-back ones first.

    A failure from here on raises :class:`StreamInterrupted`. Closing it early (the client went
    away) closes the upstream stream too.
    """

    def __init__(
        self,
        failover: Failover,
        deployment: Deployment,
        record: CallRecord,
        head: list[ChatCompletionChunk],
        chunks: AsyncIterator[ChatCompletionChunk],
        started: float,
    ) -> None:
        self.deployment = deployment
        self.record = record
        self._failover = failover
        self._head = head
        self._chunks = chunks
        self._started = started
        self._open = True

    async def __aiter__(self) -> AsyncGenerator[ChatCompletionChunk, None]:
        try:
            for chunk in self._head:
                yield chunk
            self._head = []
            async for chunk in self._chunks:
                yield chunk
        except ProviderError as exc:
            self._end()
            self._failover._failed(
                self.deployment, self.record, exc, self._started, self.record.ttft_s or 0.0
            )
            raise StreamInterrupted(exc) from None
        except BaseException:
            if self._end():
                self.deployment.breaker.release()
            raise
        else:
            if self._end():
                elapsed = self._failover._succeeded(
                    self.deployment, self.record, self._started, self.record.ttft_s or 0.0
                )
                self.deployment.stats.observe_total(elapsed)
        finally:
            await self.aclose()

    def _end(self) -> bool:
        """Mark the stream finished once; True the first time."""
        if not self._open:
            return False
        self._open = False
        self.record.streaming = False
        self.deployment.in_flight -= 1
        return True

    async def aclose(self) -> None:
        """Stop the upstream stream (idempotent)."""
        if self._end():
            self.deployment.breaker.release()
        closer = getattr(self._chunks, "aclose", None)
        if closer is not None:
            await closer()
