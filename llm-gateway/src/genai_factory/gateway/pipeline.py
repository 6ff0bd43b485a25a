"""The request path: nine stages, each one small class, walked in a straight line.

1 authenticate -> 2 admit (rate limits, budget) -> 3 screen input -> 4 look up (cache) ->
5 route -> 6 call (failover) -> 7 screen output -> 8 store (cache, spend, usage) -> 9 observe.

A stage with no component configured does nothing, so the gateway works with any subset. A
cache hit makes route and call no-ops. Streams walk the same stages; output screening and the
store stage then run over the chunks as they pass (:meth:`Pipeline.chat_stream`).

Chat, legacy completions and embeddings all walk this one line (:meth:`Pipeline.run`): a
non-chat request carries a chat view (``RequestContext.chat``, see :mod:`.operations`) that the
budget, guard and cache stages judge, and only the call itself differs per operation.

Example:
    >>> [type(stage).__name__ for stage in Pipeline.minimal(router=None).stages]  # doctest: +ELLIPSIS
    ['Authenticate', 'Admit', 'ScreenInput', 'LookUp', 'Route', 'Call', 'ScreenOutput', 'Store', 'Observe']
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal, TypeVar

import orjson

from genai_factory.gateway import operations
from genai_factory.gateway.auth import ANONYMOUS
from genai_factory.gateway.deployment import Deployment
from genai_factory.gateway.failover import CallRecord, Failover, LiveStream, StreamOpener
from genai_factory.gateway.observe import GenAITracer, RequestObserver, RequestSummary
from genai_factory.gateway.providers.base import Provider
from genai_factory.gateway.ratelimit import Admission, Unit, rate_limit_headers
from genai_factory.gateway.routing import Plan, Router, RouteRequest, estimate_tokens
from genai_factory.gateway.usage import cost_of
from genai_factory.shared.contracts import (
    Authenticator,
    Authorizer,
    BudgetPolicy,
    BudgetReservation,
    Guard,
    RateDecision,
    ResponseCache,
    SpendLedger,
)
from genai_factory.shared.errors import Blocked, Forbidden, GFError, ServiceUnavailable, to_http
from genai_factory.shared.models import (
    ChatCompletionChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatMessage,
    ChunkChoice,
    ChunkDelta,
    CompletionRequest,
    CostRecord,
    EmbeddingRequest,
    FunctionCall,
    Principal,
    ToolCall,
    Usage,
    Verdict,
)

__all__ = [
    "Admit",
    "Authenticate",
    "Call",
    "LookUp",
    "Observe",
    "Pipeline",
    "RequestContext",
    "Route",
    "ScreenInput",
    "ScreenOutput",
    "Store",
]

T = TypeVar("T")
Operation = Literal["chat", "completion", "embedding"]

logger = logging.getLogger("genai_factory.gateway")


@dataclass(eq=False)
class RequestContext:
    """Everything the stages know about one request; each stage reads and fills its part."""

    request_id: str
    operation: Operation
    route: RouteRequest
    headers: Mapping[str, str] = field(default_factory=dict)
    chat: ChatCompletionRequest | None = None  # the request, or a non-chat request's chat view
    completion: CompletionRequest | None = None  # operation "completion": what is sent
    embedding: EmbeddingRequest | None = None  # operation "embedding": what is sent
    record: CallRecord = field(default_factory=CallRecord)
    started: float = field(default_factory=time.perf_counter)
    principal: Principal = field(default_factory=lambda: ANONYMOUS)
    rate: list[tuple[Unit, RateDecision]] = field(default_factory=list)
    reservation: BudgetReservation | None = None
    plan: Plan | None = None
    response: ChatCompletionResponse | None = None
    result: Any = None
    cache_hit: bool = False
    cache_consulted: bool = False
    usage: Usage | None = None
    cost_usd: Decimal = Decimal(0)
    error: BaseException | None = None
    span: Any = None  # the tracer's handle for this request's span
    span_entered: bool = False
    trace_id: str | None = None

    @property
    def deployment(self) -> Deployment | None:
        return self.record.served_by

    def cache_request(self) -> ChatCompletionRequest | None:
        """The request the response cache is keyed on; None: this operation is not cached."""
        return None if self.operation == "embedding" else self.chat

    def response_headers(self) -> dict[str, str]:
        """``x-ratelimit-*``, ``x-gf-cache``, ``x-gf-deployment`` and ``x-gf-attempts``."""
        headers = rate_limit_headers(self.rate)
        if self.cache_consulted:  # absent when no cache was asked (none configured, or refused)
            headers["x-gf-cache"] = "hit" if self.cache_hit else "miss"
        if self.deployment is not None:
            headers["x-gf-deployment"] = self.deployment.name
        if self.record.attempt_count:
            headers["x-gf-attempts"] = str(self.record.attempt_count)
        if self.trace_id:
            headers["x-gf-trace-id"] = self.trace_id
        return headers


def _note_verdict(tracer: GenAITracer | None, guard: Guard, verdict: Verdict, stage: str) -> None:
    """Tell the tracer about a guard's verdict; a failing tracer never fails the request."""
    if tracer is not None:
        try:
            tracer.record_guard_verdict(verdict, stage=stage, guard=_guard_name(guard))
        except Exception:
            logger.warning("the tracer failed to record a guard verdict", exc_info=True)


def _guard_name(guard: Guard) -> str:
    name = getattr(guard, "name", None)
    return name if isinstance(name, str) and name else type(guard).__name__


# ------------------------------------------------------------------------------------ stages


class Authenticate:
    """1. Credentials -> Principal (anonymous when no authenticator is configured), then the
    authorizer (when one is configured) decides whether the caller may call this model this way:
    action ``gateway:chat``, ``gateway:completion`` or ``gateway:embedding``, resource
    ``model:NAME``; a denial is 403."""

    def __init__(
        self, authenticator: Authenticator | None = None, authorizer: Authorizer | None = None
    ) -> None:
        self.authenticator = authenticator
        self.authorizer = authorizer

    async def __call__(self, ctx: RequestContext) -> None:
        if self.authenticator is not None:
            ctx.principal = await self.authenticator.authenticate(ctx.headers)
        if self.authorizer is not None:
            decision = await self.authorizer.authorize(
                ctx.principal,
                f"gateway:{ctx.operation}",
                f"model:{ctx.route.model}",
                {"request_id": ctx.request_id},
            )
            if not decision.allowed:
                raise Forbidden(
                    f"not allowed to call {ctx.route.model} ({decision.rule})",
                    code="permission_denied",
                )


class Admit:
    """2. Rate limits (requests and tokens, per scope), then a budget reservation."""

    def __init__(
        self,
        admission: Admission | None = None,
        budget: BudgetPolicy | None = None,
        estimate_usd: Callable[[RouteRequest], Decimal] | None = None,
    ) -> None:
        self.admission = admission
        self.budget = budget
        self.estimate_usd = estimate_usd

    async def __call__(self, ctx: RequestContext) -> None:
        if self.admission is not None:
            tokens = ctx.route.prompt_tokens + ctx.route.output_tokens
            ctx.rate = await self.admission.admit(ctx.principal, tokens)
        if self.budget is not None and ctx.chat is not None:
            estimate = self.estimate_usd(ctx.route) if self.estimate_usd else Decimal(0)
            ctx.reservation = await self.budget.reserve(ctx.principal, ctx.chat, estimate)
            if ctx.reservation.downgrade_to:
                ctx.route = _with_model(ctx.route, ctx.reservation.downgrade_to)

    async def release(self, ctx: RequestContext) -> None:
        """Give back a reservation of a request that failed."""
        if self.budget is not None and ctx.reservation is not None:
            await self.budget.release(ctx.reservation)
            ctx.reservation = None


def _with_model(route: RouteRequest, model: str) -> RouteRequest:
    return RouteRequest(
        model=model,
        prompt_tokens=route.prompt_tokens,
        output_tokens=route.output_tokens,
        needs_tools=route.needs_tools,
        needs_json=route.needs_json,
        needs_vision=route.needs_vision,
        stream=route.stream,
        hints=route.hints,
    )


class ScreenInput:
    """3. Input guards: block, or rewrite the messages (prompts, inputs) a guard redacts."""

    def __init__(self, guards: Sequence[Guard] = (), tracer: GenAITracer | None = None) -> None:
        self.guards = list(guards)
        self.tracer = tracer

    async def __call__(self, ctx: RequestContext) -> None:
        redacted = False
        for guard in self.guards:
            assert ctx.chat is not None
            verdict = await guard.check_input(ctx.chat, ctx.principal)
            _note_verdict(self.tracer, guard, verdict, "input")
            if verdict.decision == "block":
                raise _blocked("the request was blocked by a guard", verdict)
            if verdict.decision == "redact" and verdict.text is not None:
                ctx.chat = _rewritten(ctx.chat, verdict.text)
                redacted = True
        if redacted:  # what is sent upstream is the screened view, never the original
            assert ctx.chat is not None
            if ctx.completion is not None:
                ctx.completion = operations.completion_with(ctx.completion, ctx.chat)
            if ctx.embedding is not None:
                ctx.embedding = operations.embedding_with(ctx.embedding, ctx.chat)


def _blocked(message: str, verdict: Verdict) -> Blocked:
    findings = [f.model_dump(exclude_none=True) for f in verdict.findings]
    return Blocked(message, findings=findings, code="content_blocked")


def _rewritten(request: ChatCompletionRequest, text: str) -> ChatCompletionRequest:
    """The request after an input guard's ``redact`` verdict.

    ``text`` is either a JSON list with one entry per message (the new content, or null when a
    message is unchanged: the guardrails module's form) or the new last user message.
    """
    rewrites = _per_message_rewrites(text, len(request.messages))
    if rewrites is None:
        return _replace_last_user_text(request, text)
    messages = [
        message if new is None else message.model_copy(update={"content": new})
        for message, new in zip(request.messages, rewrites, strict=True)
    ]
    return request.model_copy(update={"messages": messages})


def _per_message_rewrites(text: str, count: int) -> list[str | None] | None:
    if not text.startswith("["):
        return None
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(value, list) or not all(
        item is None or isinstance(item, str) for item in value
    ):
        return None
    if len(value) != count:
        # the per-message form, but not for this request: a broken guard. Fail closed rather
        # than send the array upstream as the user's message or skip the redaction.
        raise GFError(
            f"an input guard returned {len(value)} per-message redactions for {count} "
            "messages; the request was not sent",
            code="guard_error",
        )
    return value


def _replace_last_user_text(request: ChatCompletionRequest, text: str) -> ChatCompletionRequest:
    messages = list(request.messages)
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].role == "user":
            messages[index] = messages[index].model_copy(update={"content": text})
            break
    return request.model_copy(update={"messages": messages})


class LookUp:
    """4. The response cache: a hit answers the request (route and call are then skipped)."""

    def __init__(
        self, cache: ResponseCache | None = None, tracer: GenAITracer | None = None
    ) -> None:
        self.cache = cache
        self.tracer = tracer

    async def __call__(self, ctx: RequestContext) -> None:
        request = ctx.cache_request()
        if self.cache is not None and request is not None:
            ctx.cache_consulted = True
            hit = await self.cache.get(request, ctx.principal)
            if hit is not None:
                ctx.response, ctx.cache_hit = hit, True
            if self.tracer is not None:
                try:
                    self.tracer.record_cache_lookup(hit=hit is not None)
                except Exception:
                    logger.warning("the tracer failed to record a cache lookup", exc_info=True)


class Route:
    """5. The routing plan: healthy, capable deployments in policy order, then fallbacks."""

    def __init__(self, router: Router | None) -> None:
        self.router = router

    async def __call__(self, ctx: RequestContext) -> None:
        if ctx.response is None:
            if self.router is None:
                raise ServiceUnavailable("no deployments are configured")
            ctx.plan = self.router.plan(ctx.route)


class Call:
    """6. Call along the plan with retries, breakers and fallbacks (a stream: until 1st token)."""

    def __init__(self, failover: Failover) -> None:
        self.failover = failover

    async def __call__(self, ctx: RequestContext) -> None:
        if ctx.response is not None:
            return  # answered from the cache
        if ctx.embedding is not None:
            ctx.result = await self.run(ctx, operations.embed(ctx.embedding))
        elif ctx.completion is not None:
            ctx.result = await self.run(ctx, operations.text_complete(ctx.completion))
            ctx.response = operations.response_from_text(ctx.result, ctx.route.model)
        else:
            assert ctx.chat is not None
            chat = ctx.chat
            ctx.response = await self.run(ctx, lambda provider: provider.complete(chat))

    async def run(self, ctx: RequestContext, call: Callable[[Provider], Awaitable[T]]) -> T:
        """One operation along the plan."""
        assert ctx.plan is not None
        return await self.failover.call(ctx.plan, ctx.record, call)

    async def open_stream(self, ctx: RequestContext) -> AsyncGenerator[ChatCompletionChunk, None]:
        """The stream once its first token is in (a completion: the provider's text stream)."""
        if ctx.response is not None:
            return _replay(ctx.response)
        assert ctx.plan is not None
        target: ChatCompletionRequest | StreamOpener
        if ctx.completion is not None:
            target = operations.text_stream(ctx.completion)
        else:
            assert ctx.chat is not None
            target = ctx.chat
        live: LiveStream = await self.failover.open_stream(ctx.plan, ctx.record, target)
        return live.__aiter__()


async def _replay(response: ChatCompletionResponse) -> AsyncGenerator[ChatCompletionChunk, None]:
    """A cached answer as a stream: role + content, then the finish (with usage)."""
    for choice in response.choices:
        yield ChatCompletionChunk(
            id=response.id,
            model=response.model,
            choices=[
                ChunkChoice(
                    index=choice.index,
                    delta=ChunkDelta(role="assistant", content=choice.message.text()),
                )
            ],
        )
    yield ChatCompletionChunk(
        id=response.id,
        model=response.model,
        choices=[
            ChunkChoice(index=c.index, finish_reason=c.finish_reason) for c in response.choices
        ],
        usage=response.usage,
    )


class ScreenOutput:
    """7. Output guards on the answer; on streams, over windows of text before release."""

    def __init__(
        self,
        guards: Sequence[Guard] = (),
        window_chars: int = 200,
        tracer: GenAITracer | None = None,
    ) -> None:
        self.guards = list(guards)
        self.window_chars = window_chars
        self.tracer = tracer

    def _note(self, guard: Guard, verdict: Verdict) -> None:
        _note_verdict(self.tracer, guard, verdict, "output")

    async def __call__(self, ctx: RequestContext) -> None:
        if not self.guards or ctx.response is None:
            return
        assert ctx.chat is not None
        for choice in ctx.response.choices:  # every choice (n > 1, several prompts) is judged
            message = choice.message
            text = message.text()
            for guard in self.guards:
                verdict = await guard.check_output(text, ctx.chat, ctx.principal)
                self._note(guard, verdict)
                if verdict.decision == "block":
                    raise _blocked("the answer was blocked by a guard", verdict)
                if verdict.decision == "redact" and verdict.text is not None:
                    text = verdict.text
                    message.content = text

    def stream(
        self, ctx: RequestContext, chunks: AsyncIterator[ChatCompletionChunk]
    ) -> AsyncIterator[ChatCompletionChunk]:
        if not self.guards or ctx.chat is None:  # guards judge the chat (or its view)
            return chunks
        return self._screened(ctx, chunks)

    async def _screened(
        self, ctx: RequestContext, chunks: AsyncIterator[ChatCompletionChunk]
    ) -> AsyncIterator[ChatCompletionChunk]:
        """Hold chunks back until the text so far passes every guard, window by window.

        Every choice is judged on its own text (``n`` > 1, several completion prompts), so no
        choice index is a way past the guards; the end of the stream is a window too.
        """
        held: list[ChatCompletionChunk] = []
        text: dict[int, str] = {}
        released: dict[int, str] = {}
        unchecked = 0
        last: ChatCompletionChunk | None = None
        async for chunk in chunks:
            held.append(chunk)
            last = chunk
            for choice in chunk.choices:
                if choice.delta.content:
                    text[choice.index] = text.get(choice.index, "") + choice.delta.content
                    unchecked += len(choice.delta.content)
            final = any(c.finish_reason for c in chunk.choices) or chunk.usage is not None
            if unchecked < self.window_chars and not final:
                continue
            for item in await self._release(ctx, held, text, released, chunk):
                yield item
            held, unchecked = [], 0
        if held and last is not None:  # a stream that ended without a finish: judge the rest
            for item in await self._release(ctx, held, text, released, last):
                yield item

    async def _release(
        self,
        ctx: RequestContext,
        held: list[ChatCompletionChunk],
        text: dict[int, str],
        released: dict[int, str],
        like: ChatCompletionChunk,
    ) -> list[ChatCompletionChunk]:
        """The held chunks once every choice's text passes (redacted text rewritten)."""
        rewrites: dict[int, str] = {}
        for index, so_far in text.items():
            if so_far == released.get(index):
                continue  # nothing new on this choice since it last passed
            verdict_text = await self._check(ctx, so_far)
            if verdict_text is None:
                released[index] = so_far
            elif not verdict_text.startswith(released.get(index, "")):
                # it would rewrite text already sent
                raise Blocked("the answer was blocked by a guard", code="content_blocked")
            else:
                rewrites[index] = verdict_text
        if not rewrites:
            return held
        # redacted: send the rewritten remainder instead of the held text of those choices,
        # after the held role/tool chunks and before the finish
        out: list[ChatCompletionChunk] = []
        ending: list[ChatCompletionChunk] = []
        for item in held:
            kept = _without_content(item, set(rewrites))
            if kept.usage is not None or any(c.finish_reason for c in kept.choices):
                ending.append(kept)
            elif _says_something(kept):
                out.append(kept)
        out += [
            _text_chunk(like, index, new[len(released.get(index, "")) :])
            for index, new in rewrites.items()
        ]
        out += ending
        for index, new in rewrites.items():
            released[index] = text[index] = new
        return out

    async def _check(self, ctx: RequestContext, text: str) -> str | None:
        """None when every guard allows ``text``; the rewritten text when one redacts."""
        assert ctx.chat is not None
        rewritten: str | None = None
        for guard in self.guards:
            current = text if rewritten is None else rewritten
            verdict = await guard.check_output(current, ctx.chat, ctx.principal)
            self._note(guard, verdict)
            if verdict.decision == "block":
                raise _blocked("the answer was blocked by a guard", verdict)
            if verdict.decision == "redact" and verdict.text is not None:
                rewritten = verdict.text
        return rewritten


def _text_chunk(like: ChatCompletionChunk, index: int, text: str) -> ChatCompletionChunk:
    return ChatCompletionChunk(
        id=like.id,
        model=like.model,
        choices=[ChunkChoice(index=index, delta=ChunkDelta(content=text))],
    )


def _without_content(chunk: ChatCompletionChunk, indexes: set[int]) -> ChatCompletionChunk:
    """``chunk`` without the text of the choices in ``indexes`` (their rewrite went out)."""
    choices = [
        c.model_copy(update={"delta": c.delta.model_copy(update={"content": None})})
        if c.index in indexes
        else c
        for c in chunk.choices
    ]
    return chunk.model_copy(update={"choices": choices})


def _says_something(chunk: ChatCompletionChunk) -> bool:
    """Anything left to send: text, a role, tool calls, a finish, logprobs or usage."""
    return chunk.usage is not None or any(
        c.delta.content or c.delta.role or c.delta.tool_calls or c.finish_reason or c.logprobs
        for c in chunk.choices
    )


class Store:
    """8. Usage, cost and spend; the cache write; settle the budget reservation."""

    def __init__(
        self,
        cache: ResponseCache | None = None,
        ledger: SpendLedger | None = None,
        budget: BudgetPolicy | None = None,
        ledgers: Sequence[SpendLedger] = (),
    ) -> None:
        self.cache = cache
        self.ledger = ledger
        self.budget = budget
        self.ledgers = list(ledgers)

    async def __call__(self, ctx: RequestContext) -> None:
        usage = self._usage(ctx)
        deployment = ctx.deployment
        if deployment is not None and not ctx.cache_hit:
            deployment.counters.prompt_tokens += usage.prompt_tokens
            deployment.counters.completion_tokens += usage.completion_tokens
            ctx.cost_usd = cost_of(
                deployment.input_cost_per_token * 1e6,
                deployment.output_cost_per_token * 1e6,
                usage.prompt_tokens,
                usage.completion_tokens,
            )
        request = ctx.cache_request()
        if (
            self.cache is not None
            and ctx.response is not None
            and request is not None
            and not ctx.cache_hit
        ):
            await self.cache.put(request, ctx.response, ctx.principal)
        record = self._cost_record(ctx, usage)
        if self.budget is not None and ctx.reservation is not None:
            await self.budget.settle(ctx.reservation, record)
            ctx.reservation = None
        if self.ledger is not None:
            await self.ledger.record(record)
        for ledger in self.ledgers:
            await ledger.record(record)

    @staticmethod
    def _usage(ctx: RequestContext) -> Usage:
        if ctx.usage is None:
            reported = ctx.response.usage if ctx.response is not None else None
            if reported is None and isinstance(ctx.result, dict):
                raw = ctx.result.get("usage")
                reported = Usage.model_validate(raw) if isinstance(raw, dict) else None
            elif reported is None and ctx.result is not None:
                reported = getattr(ctx.result, "usage", None)
            if reported is None:
                text = ctx.response.text() if ctx.response is not None else ""
                reported = Usage(
                    prompt_tokens=ctx.route.prompt_tokens,
                    completion_tokens=estimate_tokens(len(text)),
                )
            ctx.usage = reported
        return ctx.usage

    @staticmethod
    def _cost_record(ctx: RequestContext, usage: Usage) -> CostRecord:
        principal, deployment = ctx.principal, ctx.deployment
        return CostRecord(
            request_id=ctx.request_id,
            model=ctx.route.model,
            deployment=deployment.name if deployment else None,
            provider=deployment.provider_kind if deployment else None,
            subject=principal.subject,
            org_id=principal.org_id,
            team_id=principal.team_id,
            user_id=principal.user_id,
            key_id=principal.key_id,
            route=ctx.operation,
            input_tokens=usage.prompt_tokens,
            output_tokens=usage.completion_tokens,
            cost_usd=ctx.cost_usd,
            cache_hit=ctx.cache_hit,
        )

    async def collect(
        self, ctx: RequestContext, chunks: AsyncIterator[ChatCompletionChunk]
    ) -> AsyncIterator[ChatCompletionChunk]:
        """Pass chunks through while assembling the whole answer into ``ctx.response``."""
        answer = _Assembler()
        async for chunk in chunks:
            answer.add(chunk)
            yield chunk
        ctx.response = answer.response(ctx)


class _Assembler:
    """Builds a ChatCompletionResponse from the chunks of a stream."""

    def __init__(self) -> None:
        self.id = ""
        self.model = ""
        self.text: dict[int, list[str]] = {}
        self.tools: dict[int, dict[int, dict[str, str]]] = {}
        self.finish: dict[int, Any] = {}
        self.usage: Usage | None = None

    def add(self, chunk: ChatCompletionChunk) -> None:
        self.id, self.model = chunk.id, chunk.model
        if chunk.usage is not None:
            self.usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                self.text.setdefault(choice.index, []).append(choice.delta.content)
            for call in choice.delta.tool_calls or ():
                slot = self.tools.setdefault(choice.index, {}).setdefault(
                    call.index, {"id": "", "name": "", "arguments": ""}
                )
                slot["id"] = call.id or slot["id"]
                function = call.function or {}
                slot["name"] = function.get("name") or slot["name"]
                slot["arguments"] += function.get("arguments") or ""
            if choice.finish_reason:
                self.finish[choice.index] = choice.finish_reason

    def response(self, ctx: RequestContext) -> ChatCompletionResponse:
        indexes = sorted(set(self.text) | set(self.tools) | set(self.finish)) or [0]
        choices = []
        for index in indexes:
            calls = [
                ToolCall(
                    id=c["id"], function=FunctionCall(name=c["name"], arguments=c["arguments"])
                )
                for _, c in sorted(self.tools.get(index, {}).items())
            ]
            message = ChatMessage(
                role="assistant",
                content="".join(self.text.get(index, []))
                if not calls or index in self.text
                else None,
                tool_calls=calls or None,
            )
            choices.append(
                ChatCompletionChoice(
                    index=index, message=message, finish_reason=self.finish.get(index)
                )
            )
        return ChatCompletionResponse(
            id=self.id or ctx.request_id,
            model=self.model or ctx.route.model,
            choices=choices,
            usage=self.usage,
        )


class Observe:
    """9. The request's span (through the tracer) and one summary per request to the observers.

    :meth:`begin` opens the span once the caller is known; :meth:`__call__` ends it (usage,
    response, error) and hands the summary to the observers (logs, metrics).
    """

    def __init__(
        self, observers: Sequence[RequestObserver] = (), tracer: GenAITracer | None = None
    ) -> None:
        self.observers = list(observers)
        self.tracer = tracer

    def begin(self, ctx: RequestContext, *, current: bool) -> None:
        """Open the request's span; ``current``: make it the active span until it ends."""
        tracer = self.tracer
        if tracer is None:
            return
        try:
            with tracer.attribute(
                request_id=ctx.request_id, principal=ctx.principal, route=ctx.operation
            ):
                if ctx.operation == "embedding":
                    span = tracer.embeddings(ctx.route.model)
                elif ctx.operation == "completion":
                    span = tracer.chat(model=ctx.route.model, operation="text_completion")
                else:
                    span = tracer.chat(ctx.chat)
            ctx.trace_id = str(span.trace_id)
            if current:
                span.__enter__()
            ctx.span, ctx.span_entered = span, current
        except Exception:
            logger.warning("the tracer failed to open a span", exc_info=True)

    def chunks(
        self, ctx: RequestContext, chunks: AsyncIterator[ChatCompletionChunk]
    ) -> AsyncIterator[ChatCompletionChunk]:
        """Pass a stream's chunks through, noting each on the span (time to first chunk)."""
        if ctx.span is None:
            return chunks  # nothing to record: no extra layer per chunk
        return self._traced(ctx, chunks)

    async def _traced(
        self, ctx: RequestContext, chunks: AsyncIterator[ChatCompletionChunk]
    ) -> AsyncIterator[ChatCompletionChunk]:
        async for chunk in chunks:
            if ctx.span is not None:
                try:
                    ctx.span.record_chunk(chunk)
                except Exception:
                    logger.warning("the tracer failed to record a chunk", exc_info=True)
                    self._end_span(ctx)  # end it now rather than leave it open
            yield chunk

    def __call__(self, ctx: RequestContext) -> None:
        if ctx.span is not None:
            self._end_span(ctx)
        if not self.observers:
            return
        summary = self.summary(ctx)
        for observer in self.observers:
            observer.observe(summary)

    @staticmethod
    def _end_span(ctx: RequestContext) -> None:
        span, error = ctx.span, ctx.error
        ctx.span = None
        try:
            if ctx.operation == "embedding":
                if ctx.result is not None:
                    span.record_response(ctx.result)
            else:
                if ctx.response is not None:
                    span.record_response(ctx.response)
                if ctx.cache_hit:  # answered from the cache: no tokens were spent
                    span.set_usage(0, 0)
                elif ctx.usage is not None:
                    span.set_usage(ctx.usage.prompt_tokens, ctx.usage.completion_tokens)
                span.set_attribute("gf.cache.hit", ctx.cache_hit)
            if ctx.deployment is not None:
                span.set_attribute("gf.gateway.deployment", ctx.deployment.name)
            if ctx.cost_usd:  # the tracer's own price table, when it knows the model, wins
                span.set_attribute("gf.cost.usd", float(ctx.cost_usd))
        except Exception:
            logger.warning("the tracer failed to record the response", exc_info=True)
        finally:
            try:
                if ctx.span_entered:
                    span.__exit__(
                        type(error) if error is not None else None,
                        error,
                        error.__traceback__ if error is not None else None,
                    )
                else:
                    span.finish(error)
            except Exception:
                logger.warning("the tracer failed to end a span", exc_info=True)

    @staticmethod
    def summary(ctx: RequestContext) -> RequestSummary:
        if ctx.error is None:
            status = 200
        elif isinstance(ctx.error, GeneratorExit | asyncio.CancelledError):
            status = 499  # the client went away (nginx's convention)
        else:
            status = to_http(ctx.error)[0]
        usage = ctx.usage or Usage()
        deployment = ctx.deployment
        finish = None
        if ctx.response is not None and ctx.response.choices:
            finish = ctx.response.choices[0].finish_reason
        return RequestSummary(
            request_id=ctx.request_id,
            operation=ctx.operation,
            model=ctx.route.model,
            status=status,
            stream=ctx.route.stream,
            deployment=deployment.name if deployment else None,
            provider=deployment.provider_kind if deployment else None,
            subject=ctx.principal.subject,
            org_id=ctx.principal.org_id,
            team_id=ctx.principal.team_id,
            user_id=ctx.principal.user_id,
            cache_hit=ctx.cache_hit,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            cost_usd=str(ctx.cost_usd),
            duration_s=time.perf_counter() - ctx.started,
            upstream_s=ctx.record.upstream_s,
            ttft_s=ctx.record.ttft_s,
            attempts=[
                {"deployment": a.deployment, "ok": a.ok, "error": a.error}
                for a in ctx.record.attempts
            ],
            error_type=type(ctx.error).__name__ if ctx.error is not None else None,
            finish_reason=finish,
        )


# ---------------------------------------------------------------------------------- pipeline


class Pipeline:
    """The stages in order; :meth:`chat` and :meth:`chat_stream` walk them top to bottom."""

    def __init__(
        self,
        authenticate: Authenticate,
        admit: Admit,
        screen_input: ScreenInput,
        look_up: LookUp,
        route: Route,
        call: Call,
        screen_output: ScreenOutput,
        store: Store,
        observe: Observe,
    ) -> None:
        self.authenticate = authenticate
        self.admit = admit
        self.screen_input = screen_input
        self.look_up = look_up
        self.route = route
        self.call = call
        self.screen_output = screen_output
        self.store = store
        self.observe = observe

    @classmethod
    def minimal(cls, router: Router | None) -> Pipeline:
        """Only routing and failover: a bare pass-through."""
        return cls(
            Authenticate(),
            Admit(),
            ScreenInput(),
            LookUp(),
            Route(router),
            Call(Failover()),
            ScreenOutput(),
            Store(),
            Observe(),
        )

    @property
    def stages(self) -> list[object]:
        return [
            self.authenticate,
            self.admit,
            self.screen_input,
            self.look_up,
            self.route,
            self.call,
            self.screen_output,
            self.store,
            self.observe,
        ]

    async def run(self, ctx: RequestContext) -> None:
        """Any operation (chat, completion, embedding), answered whole: every stage in order.

        The answer is in ``ctx.response`` (chat, completion) and ``ctx.result`` (the provider's
        own body: an embedding response, a text completion).
        """
        try:
            await self.authenticate(ctx)
            self.observe.begin(ctx, current=True)
            await self.admit(ctx)
            await self.screen_input(ctx)
            await self.look_up(ctx)
            await self.route(ctx)
            await self.call(ctx)
            await self.screen_output(ctx)
            await self.store(ctx)
        except BaseException as exc:
            await self._failed(ctx, exc)
            raise
        finally:
            self.observe(ctx)

    async def chat(self, ctx: RequestContext) -> ChatCompletionResponse:
        """A chat request (or a completion's chat view), answered whole."""
        await self.run(ctx)
        assert ctx.response is not None
        return ctx.response

    async def chat_stream(self, ctx: RequestContext) -> AsyncGenerator[ChatCompletionChunk, None]:
        """A streamed chat or completion: raises before the first token, or returns the chunks.

        A failure while iterating the chunks raises StreamInterrupted (upstream) or Blocked
        (an output guard); the API turns either into an error event.
        """
        try:
            await self.authenticate(ctx)
            # not made current: the chunks are delivered from another task
            self.observe.begin(ctx, current=False)
            await self.admit(ctx)
            await self.screen_input(ctx)
            await self.look_up(ctx)
            await self.route(ctx)
            chunks = await self.call.open_stream(ctx)
        except BaseException as exc:
            await self._failed(ctx, exc)
            self.observe(ctx)
            raise
        return self._deliver(ctx, chunks)

    async def _deliver(
        self, ctx: RequestContext, chunks: AsyncGenerator[ChatCompletionChunk, None]
    ) -> AsyncGenerator[ChatCompletionChunk, None]:
        try:
            screened = self.screen_output.stream(ctx, self.store.collect(ctx, chunks))
            async for chunk in self.observe.chunks(ctx, screened):
                yield chunk
            await self.store(ctx)
        except BaseException as exc:
            await self._failed(ctx, exc)
            raise
        finally:
            await chunks.aclose()
            self.observe(ctx)

    async def _failed(self, ctx: RequestContext, exc: BaseException) -> None:
        ctx.error = exc
        await self.admit.release(ctx)
