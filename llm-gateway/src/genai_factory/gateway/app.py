"""The HTTP API: OpenAI-compatible and Anthropic-compatible endpoints, admin, health, metrics.

Every response carries ``x-request-id`` (the client's, when it sent a sane one) and
``x-gf-overhead-ms`` (time spent in the gateway, upstream time excluded). Client mistakes get a
4xx with an OpenAI error body (``/v1/messages``: Anthropic's error shape); nothing a client sends
produces a 5xx. Streams: an upstream failure before the first token is an ordinary error
response; after it, the stream ends with an error event and no ``[DONE]``.

Example (serving it)::

    from genai_factory.gateway.app import create_app
    from genai_factory.gateway.runtime import Gateway
    app = create_app(Gateway.from_file("gateway.yaml"))   # any ASGI server runs it
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from genai_factory.gateway import operations
from genai_factory.gateway.auth import ANONYMOUS, presented_key
from genai_factory.gateway.failover import CallRecord, StreamInterrupted
from genai_factory.gateway.metrics import CONTENT_TYPE
from genai_factory.gateway.pipeline import RequestContext
from genai_factory.gateway.providers.base import (
    aiohttp_module,
)
from genai_factory.gateway.routing import (
    RouteHints,
    RouteRequest,
    estimate_tokens,
    route_request_for,
)
from genai_factory.gateway.runtime import Gateway, Runtime
from genai_factory.gateway.sse import DONE_EVENT
from genai_factory.gateway.usage import UsageLedger
from genai_factory.shared.errors import (
    BadRequest,
    ConfigError,
    Forbidden,
    GFError,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    ValidationError,
    to_http,
)
from genai_factory.shared.models import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    EmbeddingResponse,
    parse,
)

__all__ = ["GatewayHeaders", "create_app"]

logger = logging.getLogger("genai_factory.gateway")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


class InvalidConfig(BadRequest):
    """A reload was asked for, but the new configuration is invalid: nothing changed."""

    status = 422


# ----------------------------------------------------------------------------- middleware


class GatewayHeaders:
    """Adds ``x-request-id`` and ``x-gf-overhead-ms`` to every HTTP response (pure ASGI)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = ""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                if _REQUEST_ID.match(candidate):
                    request_id = candidate
                break
        request_id = request_id or uuid.uuid4().hex
        record = CallRecord()
        state = scope.setdefault("state", {})
        state["request_id"], state["call_record"] = request_id, record

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                overhead_ms = max(0.0, (time.perf_counter() - started - record.upstream_s) * 1000)
                headers = list(message.get("headers", ()))
                headers.append((b"x-request-id", request_id.encode()))
                headers.append((b"x-gf-overhead-ms", f"{overhead_ms:.3f}".encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


# ---------------------------------------------------------------------------------- helpers


def _json(payload: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(payload), status_code=status, headers=headers, media_type="application/json"
    )


def _error_payload(exc: BaseException) -> tuple[int, dict[str, Any], dict[str, str]]:
    if isinstance(exc, ConfigError):
        exc = InvalidConfig(exc.message, param=exc.param)
    status, body, headers = to_http(exc)
    if status >= 500 and not isinstance(exc, GFError):
        logger.error("unhandled error", exc_info=exc)
    return status, body, headers


def _openai_error(exc: BaseException, ctx: RequestContext | None = None) -> Response:
    status, body, headers = _error_payload(exc)
    if ctx is not None:
        headers = {**ctx.response_headers(), **headers}
    return _json(body, status, headers)


def _anthropic_error(exc: BaseException, ctx: RequestContext | None = None) -> Response:
    status, body, headers = _error_payload(exc)
    if ctx is not None:
        headers = {**ctx.response_headers(), **headers}
    from genai_factory.gateway import anthropic_format

    return _json(anthropic_format.error_body(status, body), status, headers)


async def _read_json(request: Request, limit: int) -> dict[str, Any]:
    """The body as a JSON object; 413 beyond ``limit`` bytes (checked before and while reading)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body exceeds {limit} bytes", code="body_too_large")
    parts: list[bytes] = []
    size = 0
    async for part in request.stream():
        size += len(part)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds {limit} bytes", code="body_too_large")
        parts.append(part)
    try:
        data = orjson.loads(b"".join(parts))
    except orjson.JSONDecodeError:
        raise BadRequest("request body is not valid JSON", code="invalid_json") from None
    if not isinstance(data, dict):
        raise ValidationError("request body must be a JSON object")
    return data


def _context(request: Request, route: RouteRequest, operation: Any) -> RequestContext:
    state = request.scope.get("state", {})
    return RequestContext(
        request_id=state.get("request_id") or uuid.uuid4().hex,
        operation=operation,
        route=route,
        headers=dict(request.headers),  # decoded once: stages look headers up by name
        record=state.get("call_record") or CallRecord(),
    )


def _hints(request: Request) -> RouteHints:
    return RouteHints.parse(request.headers.get("x-gf-route"))


def _chunk_event(chunk: ChatCompletionChunk) -> bytes:
    return b"data: " + orjson.dumps(chunk.model_dump(exclude_none=True)) + b"\n\n"


def _stream_failure(exc: BaseException) -> GFError | None:
    """The error to report in-stream; None for a bug (logged, reported generically)."""
    if isinstance(exc, StreamInterrupted):
        return exc.error
    if isinstance(exc, GFError):
        return exc
    logger.error("stream failed", exc_info=exc)
    return None


async def _sse_events(
    chunks: AsyncIterator[ChatCompletionChunk],
    encode: Callable[[ChatCompletionChunk], bytes | None],
) -> AsyncIterator[bytes]:
    """SSE: each chunk as ``encode`` writes it (None: nothing to send), then ``[DONE]``; a
    failure ends the stream with an error event instead."""
    try:
        async for chunk in chunks:
            event = encode(chunk)
            if event is not None:
                yield event
    except Exception as exc:
        yield _error_event(exc)
        return
    finally:
        closer = getattr(chunks, "aclose", None)
        if closer is not None:
            await closer()
    yield DONE_EVENT


def _error_event(exc: Exception) -> bytes:
    """The OpenAI error event that ends a failed stream (never followed by ``[DONE]``)."""
    error = _stream_failure(exc)
    body = to_http(error if error is not None else exc)[1]
    body["error"]["code"] = body["error"].get("code") or "stream_interrupted"
    return b"data: " + orjson.dumps(body) + b"\n\n"


async def _anthropic_events(
    chunks: AsyncIterator[ChatCompletionChunk], model: str
) -> AsyncIterator[bytes]:
    from genai_factory.gateway import anthropic_format

    encoder = anthropic_format.StreamEncoder(model)
    try:
        async for chunk in chunks:
            for event in encoder.encode(chunk):
                yield event
    except Exception as exc:
        error = _stream_failure(exc)
        status, body, _ = to_http(error if error is not None else exc)
        yield encoder.error(status, body)
        return
    finally:
        closer = getattr(chunks, "aclose", None)
        if closer is not None:
            await closer()
    for event in encoder.finish():
        yield event


# --------------------------------------------------------------------------------- endpoints


def _completion_event(chunk: ChatCompletionChunk) -> bytes | None:
    """A chunk as OpenAI's streamed ``text_completion`` event (None: nothing to say)."""
    choices = [
        {
            "index": c.index,
            "text": c.delta.content or "",
            "logprobs": c.logprobs,
            "finish_reason": c.finish_reason,
        }
        for c in chunk.choices
        if c.delta.content or c.finish_reason or c.logprobs
    ]
    if not choices and chunk.usage is None:
        return None  # e.g. a chat stream's role-only first chunk
    event: dict[str, Any] = {
        "id": chunk.id.replace("chatcmpl", "cmpl", 1),
        "object": "text_completion",
        "created": chunk.created,
        "model": chunk.model,
        "choices": choices,
    }
    if chunk.usage is not None:
        event["usage"] = chunk.usage.model_dump()
    return b"data: " + orjson.dumps(event) + b"\n\n"


class _API:
    """The endpoint handlers, bound to one :class:`Gateway`."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def _limit(self, runtime: Runtime) -> int:
        return runtime.settings.max_body_bytes

    async def chat_completions(self, request: Request) -> Response:
        runtime = self.gateway.runtime
        ctx: RequestContext | None = None
        try:
            chat = parse(ChatCompletionRequest, await _read_json(request, self._limit(runtime)))
            ctx = _context(request, route_request_for(chat, _hints(request)), "chat")
            ctx.chat = chat
            if chat.stream:
                chunks = await runtime.pipeline.chat_stream(ctx)
                return StreamingResponse(
                    _sse_events(chunks, _chunk_event),
                    media_type="text/event-stream",
                    headers={**ctx.response_headers(), **_SSE_HEADERS},
                )
            answer = await runtime.pipeline.chat(ctx)
            return _json(answer.model_dump(exclude_none=True), headers=ctx.response_headers())
        except Exception as exc:
            return _openai_error(exc, ctx)

    async def messages(self, request: Request) -> Response:
        from genai_factory.gateway import anthropic_format  # imported once the server is up

        runtime = self.gateway.runtime
        ctx: RequestContext | None = None
        try:
            body = await _read_json(request, self._limit(runtime))
            chat = anthropic_format.request_to_chat(body)
            ctx = _context(request, route_request_for(chat, _hints(request)), "chat")
            ctx.chat = chat
            if chat.stream:
                chunks = await runtime.pipeline.chat_stream(ctx)
                return StreamingResponse(
                    _anthropic_events(chunks, chat.model),
                    media_type="text/event-stream",
                    headers={**ctx.response_headers(), **_SSE_HEADERS},
                )
            answer = await runtime.pipeline.chat(ctx)
            return _json(
                anthropic_format.response_from_chat(answer), headers=ctx.response_headers()
            )
        except Exception as exc:
            return _anthropic_error(exc, ctx)

    async def completions(self, request: Request) -> Response:
        runtime = self.gateway.runtime
        ctx: RequestContext | None = None
        try:
            body = parse(CompletionRequest, await _read_json(request, self._limit(runtime)))
            prompt = body.prompt if isinstance(body.prompt, str) else "".join(body.prompt)
            route = RouteRequest(
                model=body.model,
                prompt_tokens=estimate_tokens(len(prompt)),
                output_tokens=body.max_tokens or 16,
                stream=body.stream,
                hints=_hints(request),
            )
            ctx = _context(request, route, "completion")
            # the same stages as chat, judged on the prompts as user messages
            ctx.completion, ctx.chat = body, operations.completion_view(body)
            if body.stream:
                chunks = await runtime.pipeline.chat_stream(ctx)
                return StreamingResponse(
                    _sse_events(chunks, _completion_event),
                    media_type="text/event-stream",
                    headers={**ctx.response_headers(), **_SSE_HEADERS},
                )
            answer = await runtime.pipeline.chat(ctx)
            return _json(operations.text_answer(ctx.result, answer), headers=ctx.response_headers())
        except Exception as exc:
            return _openai_error(exc, ctx)

    async def embeddings(self, request: Request) -> Response:
        runtime = self.gateway.runtime
        ctx: RequestContext | None = None
        try:
            body = parse(EmbeddingRequest, await _read_json(request, self._limit(runtime)))
            size = (
                len(body.input)
                if isinstance(body.input, str)
                else sum(len(x) if isinstance(x, str | list) else 1 for x in body.input)
            )
            route = RouteRequest(
                model=body.model,
                prompt_tokens=estimate_tokens(size),
                output_tokens=0,
                hints=_hints(request),
            )
            ctx = _context(request, route, "embedding")
            # auth, limits, budget, input guards on the input texts; no response cache
            ctx.embedding, ctx.chat = body, operations.embedding_view(body)
            await runtime.pipeline.run(ctx)
            assert isinstance(ctx.result, EmbeddingResponse)
            return _json(ctx.result.model_dump(), headers=ctx.response_headers())
        except Exception as exc:
            return _openai_error(exc, ctx)

    async def models(self, request: Request) -> Response:
        runtime = self.gateway.runtime
        try:
            stage = runtime.pipeline.authenticate
            principal = ANONYMOUS
            if stage.authenticator is not None:
                principal = await stage.authenticator.authenticate(request.headers)
            names = sorted(runtime.router.groups)
            if stage.authorizer is not None:
                # like LiteLLM's per-key model lists: show only what the caller may call somehow
                visible = []
                for name in names:
                    for operation in ("chat", "completion", "embedding"):
                        decision = await stage.authorizer.authorize(
                            principal, f"gateway:{operation}", f"model:{name}", {}
                        )
                        if decision.allowed:
                            visible.append(name)
                            break
                names = visible
            created = int(time.time())
            data = [
                {"id": name, "object": "model", "created": created, "owned_by": "genai-factory"}
                for name in names
            ]
            return _json({"object": "list", "data": data})
        except Exception as exc:
            return _openai_error(exc)

    async def liveness(self, request: Request) -> Response:
        return _json({"status": "ok"})

    async def readiness(self, request: Request) -> Response:
        deployments = self.gateway.runtime.router.deployments
        ready = any(d.breaker.state != "open" for d in deployments)
        return _json(
            {"status": "ready" if ready else "unavailable", "deployments": len(deployments)},
            200 if ready else 503,
        )

    async def metrics(self, request: Request) -> Response:
        return Response(self.gateway.metrics.render(), media_type=CONTENT_TYPE)

    async def openapi(self, request: Request) -> Response:
        from genai_factory.gateway.openapi import openapi_spec

        return _json(openapi_spec())

    # ---- admin (master key)

    def _require_master(self, request: Request) -> None:
        master = self.gateway.settings.master_key
        if master is None:
            raise Forbidden("the admin API is disabled: configure master_key (GF_MASTER_KEY)")
        key = presented_key(request.headers)
        if key is None or not hmac.compare_digest(
            key.encode("utf-8"), master.get_secret_value().encode("utf-8")
        ):
            raise Unauthorized("the admin API needs the master key")

    async def admin_deployments(self, request: Request) -> Response:
        try:
            self._require_master(request)
            runtime = self.gateway.runtime
            return _json(
                {
                    "deployments": [d.snapshot() for d in runtime.router.deployments],
                    "models": {
                        name: {
                            "deployments": [d.name for d in group.deployments],
                            "fallbacks": group.fallbacks,
                            "context_window_fallbacks": group.context_window_fallbacks,
                            "content_policy_fallbacks": group.content_policy_fallbacks,
                        }
                        for name, group in runtime.router.groups.items()
                    },
                }
            )
        except Exception as exc:
            return _openai_error(exc)

    async def admin_reload(self, request: Request) -> Response:
        try:
            self._require_master(request)
            return _json(await self.gateway.reload())
        except Exception as exc:
            return _openai_error(exc)

    async def admin_usage(self, request: Request) -> Response:
        try:
            self._require_master(request)
            ledger = self.gateway.ledger
            if not isinstance(ledger, UsageLedger):
                raise NotFound("usage counters live in the configured ledger, not in memory")
            return _json({"usage": ledger.snapshot()})
        except Exception as exc:
            return _openai_error(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = {404: "no such endpoint", 405: "method not allowed"}.get(exc.status_code, exc.detail)
    error_type = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
    return _json(
        {"error": {"message": message, "type": error_type, "param": None, "code": None}},
        exc.status_code,
        exc.headers,
    )


def _warm_up() -> None:
    import genai_factory.gateway.anthropic_format  # noqa: F401

    aiohttp_module()


def create_app(gateway: Gateway) -> ASGIApp:
    """The ASGI app for ``gateway`` (reload watcher and shutdown run in its lifespan)."""
    api = _API(gateway)
    routes: list[BaseRoute] = [
        Route("/v1/chat/completions", api.chat_completions, methods=["POST"]),
        Route("/chat/completions", api.chat_completions, methods=["POST"]),
        Route("/v1/messages", api.messages, methods=["POST"]),
        Route("/v1/completions", api.completions, methods=["POST"]),
        Route("/v1/embeddings", api.embeddings, methods=["POST"]),
        Route("/v1/models", api.models, methods=["GET"]),
        Route("/health/liveness", api.liveness, methods=["GET"]),
        Route("/health/readiness", api.readiness, methods=["GET"]),
        Route("/metrics", api.metrics, methods=["GET"]),
        Route("/openapi.json", api.openapi, methods=["GET"]),
        Route("/admin/deployments", api.admin_deployments, methods=["GET"]),
        Route("/admin/reload", api.admin_reload, methods=["POST"]),
        Route("/admin/usage", api.admin_usage, methods=["GET"]),
    ]
    # other apps from config (e.g. the observability console at /console)
    routes += [Mount(path, app=app) for path, app in gateway.mounts]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # import the HTTP client and the Anthropic translation in a worker thread now that the
        # server is up: a faster start, and the first requests do not pay for them either
        warm_up = asyncio.get_running_loop().run_in_executor(None, _warm_up)
        watcher = None
        interval = gateway.settings.reload_interval_s
        if interval and gateway.config_path is not None:
            watcher = asyncio.create_task(gateway.watch(interval))
        try:
            yield
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            await warm_up
            await gateway.aclose()

    app = Starlette(
        routes=routes, lifespan=lifespan, exception_handlers={HTTPException: _http_error}
    )
    app.state.gateway = gateway
    return GatewayHeaders(app)
