"""The OpenAI-compatible REST server over any ChatModel engine.

Routes: ``POST /v1/chat/completions`` (JSON or SSE), ``POST /v1/completions`` (the legacy prompt
API over the same engines), ``POST /v1/embeddings``, ``GET /v1/models``, ``GET /health``
(liveness), ``GET /ready`` (models loaded, not draining) and ``GET /metrics`` (Prometheus).
Every client mistake is a 4xx with OpenAI's error body; overload is 429 or 503 with Retry-After.

Example (a server for the packaged model; ``gf serving serve`` runs it with uvicorn)::

    from genai_factory.serving.server.app import create_app
    from genai_factory.serving.server.config import ServerConfig

    app = create_app(ServerConfig())
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from genai_factory.serving import __version__
from genai_factory.serving.server.asgi import (
    BodyLimitMiddleware,
    ClientGone,
    EventStreamResponse,
    sse_events,
    until_disconnect,
)
from genai_factory.serving.server.config import ServerConfig
from genai_factory.serving.server.manager import ModelManager
from genai_factory.serving.server.metrics import ServingMetrics
from genai_factory.serving.server.service import (
    ChatService,
    EmbeddingService,
    chat_request_from_completion,
    completion_chunk,
    completion_prompts,
    completion_response,
)
from genai_factory.shared.errors import (
    BadRequest,
    GFError,
    NotFound,
    ServiceUnavailable,
    ValidationError,
    to_http,
)
from genai_factory.shared.models import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    EmbeddingRequest,
    EmbeddingResponse,
    ModelCard,
    ModelList,
    new_id,
)

__all__ = ["ServerParts", "create_app"]

logger = logging.getLogger("genai_factory.serving.server")

CLIENT_CLOSED_REQUEST = 499  # nginx's status for a client that left before the answer


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    """OpenAI's error JSON."""

    error: ErrorDetail


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "a client mistake (the body names the field)"},
    404: {"model": ErrorBody, "description": "unknown model"},
    413: {"model": ErrorBody, "description": "the body is larger than max_body_bytes"},
    429: {"model": ErrorBody, "description": "the model's queue is full (see Retry-After)"},
    503: {"model": ErrorBody, "description": "not ready, draining or waited too long"},
}


def _error_response(exc: BaseException) -> JSONResponse:
    status, body, headers = to_http(exc)
    return JSONResponse(body, status_code=status, headers=headers)


def _from_request_validation(exc: RequestValidationError) -> ValidationError:
    errors = list(exc.errors())
    if not errors:
        return ValidationError("invalid request body")
    first = errors[0]
    loc = [str(part) for part in first.get("loc", ()) if part != "body"]
    if first.get("type") == "json_invalid":
        return ValidationError(
            f"the request body is not valid JSON: {first.get('ctx', {}).get('error', '')}",
            code="invalid_json",
        )
    param = ".".join(loc) or None
    where = f"'{param}'" if param else "request body"
    return ValidationError(f"invalid {where}: {first.get('msg', 'invalid value')}", param=param)


class ServerParts:
    """The objects behind one app, shared with the gRPC server: manager, services, metrics."""

    def __init__(self, config: ServerConfig, manager: ModelManager | None = None) -> None:
        self.config = config
        self.manager = manager or ModelManager(
            config.models,
            memory_budget_mb=config.memory_budget_mb,
            retry_after_s=config.retry_after_s,
        )
        self.metrics = ServingMetrics(self.manager)
        self.chat = ChatService(self.manager, self.metrics)
        self.embeddings = EmbeddingService(config.embeddings, self.metrics)

    async def start(self) -> None:
        await self.manager.start()

    async def stop(self) -> None:
        """Refuse new requests, give running ones ``drain_timeout_s``, then free the models."""
        await self.manager.drain(self.config.drain_timeout_s)
        await self.manager.close()
        await self.embeddings.close()


def create_app(config: ServerConfig | None = None, *, parts: ServerParts | None = None) -> FastAPI:
    """The FastAPI app for ``config`` (or for prepared ``parts``, e.g. shared with gRPC).

    The lifespan loads the preloaded models at start and drains at shutdown; without a lifespan
    (an in-process test client) call ``await parts.start()`` first.
    """
    parts = parts or ServerParts(config or ServerConfig())
    config = parts.config
    manager, chat, metrics = parts.manager, parts.chat, parts.metrics

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await parts.start()
        try:
            yield
        finally:
            await parts.stop()

    app = FastAPI(
        title="GenAI Factory model serving",
        version=__version__,
        summary="OpenAI-compatible chat, completions and embeddings over local engines",
        lifespan=lifespan,
    )
    app.state.parts = parts
    app.add_middleware(BodyLimitMiddleware, max_bytes=config.max_body_bytes)

    @app.exception_handler(GFError)
    async def on_gf_error(_: Request, exc: GFError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def on_invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error_response(_from_request_validation(exc))

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return _error_response(NotFound("no such route", code="not_found"))
        # keep Starlette's status (405, 415...) with OpenAI's error body
        body = to_http(BadRequest(str(exc.detail), code=f"http_{exc.status_code}"))[1]
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def on_unexpected(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error", exc_info=exc)
        return _error_response(exc)

    async def counted(
        model: str, endpoint: str, work: Callable[[], Awaitable[Response]]
    ) -> Response:
        label = chat.label(model) if endpoint != "embeddings" else model
        try:
            response = await work()
        except ClientGone:
            metrics.count_request(label, endpoint, CLIENT_CLOSED_REQUEST)
            return Response(status_code=CLIENT_CLOSED_REQUEST)
        except Exception as exc:
            metrics.count_request(label, endpoint, to_http(exc)[0])
            raise
        metrics.count_request(label, endpoint, response.status_code)
        return response

    @app.post(
        "/v1/chat/completions",
        responses={200: {"model": ChatCompletionResponse}, **_ERRORS},
        tags=["openai"],
    )
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        """A chat answer as JSON, or as server-sent events when ``stream`` is true."""

        async def work() -> Response:
            if body.stream:
                stream = await chat.open_stream(body)
                chunks = stream.chunks()

                async def close() -> None:
                    await chunks.aclose()
                    await stream.aclose()

                return EventStreamResponse(sse_events(chunks), on_close=close)
            answer = await until_disconnect(request.receive, chat.complete(body))
            return JSONResponse(answer.model_dump(mode="json", exclude_none=True, by_alias=True))

        return await counted(body.model, "chat", work)

    @app.post("/v1/completions", responses=_ERRORS, tags=["openai"])
    async def completions(body: CompletionRequest, request: Request) -> Response:
        """The legacy prompt API: each prompt goes to the chat engine as one user message."""

        async def work() -> Response:
            prompts = completion_prompts(body)
            chats = [chat_request_from_completion(body, prompt) for prompt in prompts]
            if body.stream:
                stream = await chat.open_stream(chats[0], endpoint="completions")
                chunks = stream.chunks()
                completion_id = new_id("cmpl")

                async def events() -> AsyncIterator[dict[str, Any]]:
                    async for chunk in chunks:
                        yield completion_chunk(chunk, completion_id)

                async def close() -> None:
                    await chunks.aclose()
                    await stream.aclose()

                return EventStreamResponse(sse_events(events()), on_close=close)

            async def answer_all() -> list[ChatCompletionResponse]:
                return [await chat.complete(c, endpoint="completions") for c in chats]

            answers = await until_disconnect(request.receive, answer_all())
            return JSONResponse(completion_response(body.model, answers))

        return await counted(body.model, "completions", work)

    @app.post(
        "/v1/embeddings",
        responses={200: {"model": EmbeddingResponse}, **_ERRORS},
        tags=["openai"],
    )
    async def embeddings(body: EmbeddingRequest) -> Response:
        """Sentence embeddings (all-MiniLM-L6-v2 by default), as floats or base64."""

        async def work() -> Response:
            result = await parts.embeddings.embed(body)
            return JSONResponse(result.model_dump(mode="json"))

        label = body.model if body.model in parts.embeddings.names() else "unknown"
        return await counted(label, "embeddings", work)

    def cards() -> list[ModelCard]:
        chat_cards = [
            ModelCard.model_validate(
                {
                    "id": state.name,
                    "kind": "chat",
                    "loaded": state.loaded,
                    "max_output_tokens": manager.config(state.name).max_output_tokens,
                    "max_choices": manager.config(state.name).max_choices,
                }
            )
            for state in manager.states()
        ]
        embedding_cards = [
            ModelCard.model_validate(
                {"id": name, "kind": "embedding", "loaded": parts.embeddings.loaded(name)}
            )
            for name in parts.embeddings.names()
        ]
        return chat_cards + embedding_cards

    @app.get("/v1/models", response_model=ModelList, tags=["openai"])
    async def list_models() -> ModelList:
        """The chat and embedding models this server offers."""
        return ModelList(data=cards())

    @app.get(
        "/v1/models/{model:path}", response_model=ModelCard, responses=_ERRORS, tags=["openai"]
    )
    async def get_model(model: str) -> ModelCard:
        """One model's card; 404 if this server does not offer it."""
        for card in cards():
            if card.id == model:
                return card
        raise NotFound(f"the model '{model}' does not exist", param="model", code="model_not_found")

    @app.get("/health", tags=["ops"])
    async def health() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/ready", tags=["ops"], responses={503: _ERRORS[503]})
    async def ready() -> dict[str, Any]:
        """Readiness: the preloaded models are loaded and the server is not draining."""
        if not manager.ready:
            reason = "draining" if manager.draining else "loading models"
            raise ServiceUnavailable(
                f"not ready: {reason}", retry_after=config.retry_after_s, code="not_ready"
            )
        return {
            "status": "ready",
            "models": {state.name: state.loaded for state in manager.states()},
        }

    @app.get("/metrics", tags=["ops"], response_class=Response)
    async def prometheus_metrics() -> Response:
        """Prometheus text exposition."""
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    app.state.started_at = time.time()
    return app
