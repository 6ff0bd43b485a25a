"""What the REST and gRPC front ends share: checks, admission, engine calls and metrics.

:class:`ChatService` turns a validated request into an answer or a :class:`ChatStream` while it
holds the model's lease; the stream releases the lease (and closes the engine's stream, which
stops generation) as soon as it is closed, whether it ran to the end or the client went away.
:class:`EmbeddingService` serves the embedding models; the legacy completions API is translated
to chat by :func:`chat_request_from_completion`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack
from typing import Any

import numpy as np

from genai_factory.serving.server.config import EmbeddingModelConfig
from genai_factory.serving.server.manager import ModelManager
from genai_factory.serving.server.metrics import ServingMetrics
from genai_factory.shared.contracts import Embedder
from genai_factory.shared.errors import NotFound, ValidationError
from genai_factory.shared.factory import build_component
from genai_factory.shared.models import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    EmbeddingData,
    EmbeddingRequest,
    EmbeddingResponse,
    StreamOptions,
    Usage,
    new_id,
    parse,
)

__all__ = [
    "ChatService",
    "ChatStream",
    "EmbeddingService",
    "chat_request_from_completion",
    "completion_chunk",
    "completion_response",
]


def _generated(chunk: ChatCompletionChunk) -> int:
    """Tokens a chunk carries (engines stream one token per content or tool-call delta)."""
    return sum(1 for c in chunk.choices if c.delta.content or c.delta.tool_calls)


class ChatStream:
    """An open stream of chunks that holds its model's lease until closed.

    Iterate :meth:`chunks` once; :meth:`aclose` is idempotent and safe from any task.
    """

    def __init__(
        self,
        request: ChatCompletionRequest,
        first: ChatCompletionChunk | None,
        rest: AsyncIterator[ChatCompletionChunk],
        stack: AsyncExitStack,
        metrics: ServingMetrics,
        endpoint: str,
        arrived: float,
    ) -> None:
        self.request = request
        self._first = first
        self._rest = rest
        self._stack = stack
        self._metrics = metrics
        self._endpoint = endpoint
        self._arrived = arrived
        self._closed = False
        self.usage: Usage | None = None

    @property
    def include_usage(self) -> bool:
        options = self.request.stream_options
        return options is not None and options.include_usage

    async def chunks(self) -> AsyncGenerator[ChatCompletionChunk, None]:
        """The chunks; with ``include_usage`` a last chunk without choices carries the usage.

        Metrics are recorded however the stream ends, so an abandoned stream still counts the
        tokens it generated."""
        model = self.request.model
        completion = 0
        first_token_at: float | None = None
        engine_usage: Usage | None = None
        last: ChatCompletionChunk | None = None
        try:
            chunk = self._first
            while chunk is not None:
                if chunk.usage is not None:
                    engine_usage = chunk.usage
                if chunk.choices:
                    tokens = _generated(chunk)
                    if tokens and first_token_at is None:
                        first_token_at = time.perf_counter()
                    completion += tokens
                    last = chunk
                    yield chunk.model_copy(update={"usage": None})
                chunk = await anext(self._rest, None)
            self.usage = engine_usage or Usage(completion_tokens=completion)
            if self.include_usage:
                yield ChatCompletionChunk(
                    id=last.id if last else new_id("chatcmpl"), model=model, usage=self.usage
                )
        finally:
            finished = time.perf_counter()
            usage = self.usage or engine_usage or Usage(completion_tokens=completion)
            self._metrics.count_tokens(model, usage.prompt_tokens, usage.completion_tokens)
            self._metrics.observe_duration(model, self._endpoint, finished - self._arrived)
            if first_token_at is not None:
                self._metrics.observe_stream(
                    model,
                    first_token_at - self._arrived,
                    usage.completion_tokens,
                    finished - first_token_at,
                )
            await self.aclose()

    async def aclose(self) -> None:
        """Stop generation and release the model (idempotent)."""
        if not self._closed:
            self._closed = True
            await self._stack.aclose()


async def _close_iterator(iterator: AsyncIterator[Any]) -> None:
    close = getattr(iterator, "aclose", None)
    if close is not None:
        await close()


class ChatService:
    """Chat requests through the model manager, with the per-model limits and the metrics."""

    def __init__(self, manager: ModelManager, metrics: ServingMetrics) -> None:
        self.manager = manager
        self.metrics = metrics

    def label(self, model: str) -> str:
        """The metrics label for a requested model name (unknown names share one label)."""
        return model if model in self.manager.names() else "unknown"

    def prepare(self, request: ChatCompletionRequest) -> ChatCompletionRequest:
        """Check ``request`` against what this server and model support; set the token cap."""
        config = self.manager.config(request.model)
        if request.n > config.max_choices:
            raise ValidationError(
                f"n is too large: the model '{request.model}' gives at most "
                f"{config.max_choices} choice(s) per request",
                param="n",
                code="unsupported_parameter",
            )
        if request.logprobs and not config.logprobs:
            raise ValidationError(
                f"the model '{request.model}' does not return logprobs",
                param="logprobs",
                code="unsupported_parameter",
            )
        limit = request.output_limit
        if limit is not None and limit > config.max_output_tokens:
            param = "max_completion_tokens" if request.max_completion_tokens else "max_tokens"
            raise ValidationError(
                f"{param} is too large: {limit}. The model '{request.model}' generates at most "
                f"{config.max_output_tokens} tokens per request",
                param=param,
                code="max_tokens_too_large",
            )
        if limit is None:
            request = request.model_copy(update={"max_tokens": config.max_output_tokens})
        return request

    async def complete(
        self, request: ChatCompletionRequest, *, endpoint: str = "chat"
    ) -> ChatCompletionResponse:
        """One answer; the model's lease is held while the engine works."""
        arrived = time.perf_counter()
        request = self.prepare(request.model_copy(update={"stream": False}))
        async with self.manager.lease(request.model) as engine:
            response = await engine.complete(request)
        response.model = request.model
        if response.usage is not None:
            self.metrics.count_tokens(
                request.model, response.usage.prompt_tokens, response.usage.completion_tokens
            )
        self.metrics.observe_duration(request.model, endpoint, time.perf_counter() - arrived)
        return response

    async def open_stream(
        self, request: ChatCompletionRequest, *, endpoint: str = "chat"
    ) -> ChatStream:
        """Admit the request and wait for its first chunk, so that errors (a prompt too long
        for the context, a refused request) come back as errors before any byte is streamed."""
        arrived = time.perf_counter()
        request = self.prepare(request.model_copy(update={"stream": True}))
        stack = AsyncExitStack()
        try:
            engine = await stack.enter_async_context(self.manager.lease(request.model))
            stream = engine.stream(request)
            stack.push_async_callback(_close_iterator, stream)
            first = await anext(stream, None)
        except BaseException:
            await stack.aclose()
            raise
        return ChatStream(request, first, stream, stack, self.metrics, endpoint, arrived)


# -------------------------------------------------------------------------------------------
# legacy completions

# legacy fields this server does not implement, with the values that ask for nothing
_UNSUPPORTED_COMPLETION_FIELDS: dict[str, tuple[Any, ...]] = {
    "echo": (None, False),
    "best_of": (None, 1),
    "logprobs": (None,),
    "suffix": (None, ""),
    "logit_bias": (None, {}),
}


def chat_request_from_completion(request: CompletionRequest, prompt: str) -> ChatCompletionRequest:
    """A legacy completions request for one prompt, as a chat request with one user message."""
    extra = request.model_extra or {}
    for name, harmless in _UNSUPPORTED_COMPLETION_FIELDS.items():
        value = extra.get(name)
        if not any(value == h and type(value) is type(h) for h in harmless):
            raise ValidationError(
                f"'{name}' is not supported by this server",
                param=name,
                code="unsupported_parameter",
            )
    data: dict[str, Any] = {
        "model": request.model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "n": request.n,
        "stop": request.stop,
        "seed": request.seed,
        "user": request.user,
        "stream": request.stream,
    }
    for name in ("presence_penalty", "frequency_penalty"):
        if name in extra:
            data[name] = extra[name]
    if "stream_options" in extra and extra["stream_options"] is not None:
        data["stream_options"] = parse(StreamOptions, extra["stream_options"])
    return parse(ChatCompletionRequest, data)


def completion_prompts(request: CompletionRequest, max_prompts: int = 16) -> list[str]:
    """The request's prompts (one string or a list of them)."""
    prompts = [request.prompt] if isinstance(request.prompt, str) else list(request.prompt)
    if not prompts:
        raise ValidationError("prompt must not be empty", param="prompt")
    if len(prompts) > max_prompts:
        raise ValidationError(f"at most {max_prompts} prompts per request", param="prompt")
    if request.stream and len(prompts) > 1:
        raise ValidationError("streaming takes a single prompt", param="prompt")
    return prompts


def completion_response(model: str, answers: Sequence[ChatCompletionResponse]) -> dict[str, Any]:
    """Chat answers (one per prompt) as a legacy ``text_completion`` object."""
    prompt = sum(a.usage.prompt_tokens for a in answers if a.usage)
    completion = sum(a.usage.completion_tokens for a in answers if a.usage)
    return {
        "id": new_id("cmpl"),
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": index,
                "text": answer.text(),
                "logprobs": None,
                "finish_reason": answer.choices[0].finish_reason if answer.choices else "stop",
            }
            for index, answer in enumerate(answers)
        ],
        "usage": Usage(prompt_tokens=prompt, completion_tokens=completion).model_dump(),
    }


def completion_chunk(chunk: ChatCompletionChunk, completion_id: str) -> dict[str, Any]:
    """A chat chunk as a legacy ``text_completion`` stream event."""
    event: dict[str, Any] = {
        "id": completion_id,
        "object": "text_completion",
        "created": chunk.created,
        "model": chunk.model,
        "choices": [
            {
                "index": choice.index,
                "text": choice.delta.content or "",
                "logprobs": None,
                "finish_reason": choice.finish_reason,
            }
            for choice in chunk.choices
        ],
    }
    if chunk.usage is not None:
        event["usage"] = chunk.usage.model_dump()
    return event


# -------------------------------------------------------------------------------------------
# embeddings

EmbedderBuilder = Callable[[EmbeddingModelConfig], Embedder]


def build_embedder(config: EmbeddingModelConfig) -> Embedder:
    return build_component(config.engine, Embedder, where=f"embeddings.{config.name}.engine")


class EmbeddingService:
    """The embedding models, built and loaded on first use, one batch at a time each."""

    def __init__(
        self,
        models: Sequence[EmbeddingModelConfig],
        metrics: ServingMetrics,
        builder: EmbedderBuilder | None = None,
    ) -> None:
        self.models = {m.name: m for m in models}
        self.metrics = metrics
        self._builder = builder or build_embedder
        self._embedders: dict[str, Embedder] = {}
        self._locks = {name: asyncio.Lock() for name in self.models}

    def names(self) -> list[str]:
        return list(self.models)

    def loaded(self, name: str) -> bool:
        return name in self._embedders

    def config(self, name: str) -> EmbeddingModelConfig:
        config = self.models.get(name)
        if config is None:
            known = ", ".join(self.models) or "none"
            raise NotFound(
                f"the embedding model '{name}' does not exist; this server serves: {known}",
                param="model",
                code="model_not_found",
            )
        return config

    async def _embedder(self, config: EmbeddingModelConfig) -> Embedder:
        embedder = self._embedders.get(config.name)
        if embedder is None:
            embedder = self._builder(config)
            load = getattr(embedder, "load", None)
            if callable(load):
                await asyncio.to_thread(load)
            self._embedders[config.name] = embedder
        return embedder

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        """Vectors for the request's inputs, as floats or base64 of little-endian float32."""
        started = time.perf_counter()
        config = self.config(request.model)
        texts = request.texts()
        if len(texts) > config.max_inputs:
            raise ValidationError(
                f"at most {config.max_inputs} inputs per request for '{config.name}'",
                param="input",
            )
        async with self._locks[config.name]:
            embedder = await self._embedder(config)
            if request.dimensions is not None and request.dimensions != embedder.dimensions:
                raise ValidationError(
                    f"the model '{config.name}' makes {embedder.dimensions}-dimensional vectors",
                    param="dimensions",
                )
            with_usage = getattr(embedder, "embed_with_usage", None)
            if callable(with_usage):
                vectors, tokens = await with_usage(texts)
            else:
                vectors, tokens = await embedder.embed(texts), 0
        data = [
            EmbeddingData(
                index=index,
                embedding=(
                    base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
                    if request.encoding_format == "base64"
                    else vector
                ),
            )
            for index, vector in enumerate(vectors)
        ]
        self.metrics.count_tokens(config.name, tokens, 0)
        self.metrics.observe_duration(config.name, "embeddings", time.perf_counter() - started)
        return EmbeddingResponse(
            data=data, model=config.name, usage=Usage(prompt_tokens=tokens, total_tokens=tokens)
        )

    async def close(self) -> None:
        for embedder in self._embedders.values():
            close = getattr(embedder, "close", None)
            if callable(close):
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(close)
        self._embedders.clear()
