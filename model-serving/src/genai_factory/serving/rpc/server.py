"""The gRPC servicer: ``Generate`` and ``GenerateStream`` over the shared model manager.

Errors keep the REST server's meaning: a client mistake is ``INVALID_ARGUMENT``, an unknown model
``NOT_FOUND``, a full queue ``RESOURCE_EXHAUSTED`` and a draining server ``UNAVAILABLE``, with
``retry-after`` (seconds) in the trailing metadata when the client should come back. Cancelling
a ``GenerateStream`` call closes the engine's stream, which stops generation.

Example (next to the REST app, sharing its parts)::

    server = await start_grpc_server(parts, "127.0.0.1", 50051)
    ...
    await server.stop(grace=5)
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, cast

import grpc  # type: ignore[import-untyped]

from genai_factory.serving.rpc import serving_pb2, serving_pb2_grpc
from genai_factory.shared.errors import GFError, to_http
from genai_factory.shared.models import ChatCompletionRequest, StreamOptions, Usage, parse

if TYPE_CHECKING:
    from genai_factory.serving.server.app import ServerParts

__all__ = ["ServingServicer", "start_grpc_server", "status_code_for"]

_BY_HTTP_STATUS: dict[int, Any] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.ALREADY_EXISTS,
    413: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
}


def status_code_for(http_status: int) -> Any:
    """The gRPC status code that means what ``http_status`` means."""
    return _BY_HTTP_STATUS.get(http_status, grpc.StatusCode.INTERNAL)


def chat_request(message: serving_pb2.GenerateRequest) -> ChatCompletionRequest:
    """A GenerateRequest as the chat request the engines take (ValidationError if invalid)."""
    data: dict[str, Any] = {
        "model": message.model,
        "messages": [{"role": m.role, "content": m.content} for m in message.messages],
    }
    if message.HasField("max_tokens"):
        data["max_tokens"] = message.max_tokens
    if message.HasField("temperature"):
        data["temperature"] = message.temperature
    if message.HasField("top_p"):
        data["top_p"] = message.top_p
    if message.stop:
        data["stop"] = list(message.stop)
    if message.HasField("seed"):
        data["seed"] = message.seed
    if message.json_schema:
        try:
            schema = json.loads(message.json_schema)
        except json.JSONDecodeError as exc:
            schema = exc.msg  # not a mapping: the validation below names the field
        data["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": schema},
        }
    return parse(ChatCompletionRequest, data)


def _usage(usage: Usage | None) -> serving_pb2.Usage:
    if usage is None:
        return serving_pb2.Usage()
    return serving_pb2.Usage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
    )


class ServingServicer(serving_pb2_grpc.ServingServicer):
    """Implements ``genai_factory.serving.v1.Serving`` with the REST server's parts."""

    def __init__(self, parts: ServerParts) -> None:
        self.parts = parts

    async def _abort(self, context: Any, exc: BaseException, model: str, endpoint: str) -> None:
        status, body, headers = to_http(exc)
        self.parts.metrics.count_request(self.parts.chat.label(model), endpoint, status)
        metadata = tuple((key, value) for key, value in headers.items())
        await context.abort(
            status_code_for(status), body["error"]["message"], trailing_metadata=metadata
        )

    async def Generate(  # noqa: N802 (the proto's name)
        self, request: serving_pb2.GenerateRequest, context: Any
    ) -> serving_pb2.GenerateResponse:
        try:
            answer = await self.parts.chat.complete(chat_request(request), endpoint="grpc")
        except GFError as exc:
            await self._abort(context, exc, request.model, "grpc")
            raise  # abort raises; this keeps type checkers sure nothing falls through
        self.parts.metrics.count_request(self.parts.chat.label(request.model), "grpc", 200)
        choice = answer.choices[0] if answer.choices else None
        return serving_pb2.GenerateResponse(
            id=answer.id,
            model=answer.model,
            text=answer.text(),
            finish_reason=(choice.finish_reason or "") if choice else "",
            usage=_usage(answer.usage),
        )

    async def GenerateStream(  # noqa: N802 (the proto's name)
        self, request: serving_pb2.GenerateRequest, context: Any
    ) -> AsyncIterator[serving_pb2.GenerateChunk]:
        try:
            chat = chat_request(request)
            chat.stream_options = StreamOptions(include_usage=True)
            stream = await self.parts.chat.open_stream(chat, endpoint="grpc-stream")
        except GFError as exc:
            await self._abort(context, exc, request.model, "grpc-stream")
            raise
        self.parts.metrics.count_request(self.parts.chat.label(request.model), "grpc-stream", 200)
        chunks = stream.chunks()
        try:
            finish = ""
            async for chunk in chunks:
                if chunk.usage is not None:
                    yield serving_pb2.GenerateChunk(
                        id=chunk.id, finish_reason=finish, usage=_usage(chunk.usage)
                    )
                    continue
                for choice in chunk.choices:
                    if choice.finish_reason:
                        finish = choice.finish_reason
                    if choice.delta.content:
                        yield serving_pb2.GenerateChunk(id=chunk.id, text=choice.delta.content)
        except GFError as exc:
            await self._abort(context, exc, request.model, "grpc-stream")
        finally:
            # a cancelled call lands here too: stop generation, free the model
            await chunks.aclose()
            await stream.aclose()


async def start_grpc_server(parts: ServerParts, host: str, port: int) -> Any:
    """A started ``grpc.aio`` server on ``host:port`` (port 0: any free one, see ``.port``)."""
    server = grpc.aio.server()
    register = cast(Callable[[Any, Any], None], serving_pb2_grpc.add_ServingServicer_to_server)
    register(ServingServicer(parts), server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot bind gRPC to {host}:{port}")
    await server.start()
    server.port = bound
    return server
