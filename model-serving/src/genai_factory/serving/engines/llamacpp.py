"""The llama.cpp engine: a GGUF model behind the ChatModel contract, for the offline default.

llama.cpp's context is not thread-safe and generates one sequence at a time, so requests take
turns (an asyncio lock) and each generation runs in a worker thread that hands chunks to the event
loop. Closing a stream (or cancelling its task) stops generation at the next token and frees the
model for the next request.

Example:
    >>> import asyncio
    >>> from genai_factory.shared.models import ChatCompletionRequest
    >>> from genai_factory.serving.engines.llamacpp import LlamaCppChatModel
    >>> model = LlamaCppChatModel("smollm2")
    >>> request = ChatCompletionRequest(model="smollm2", temperature=0, max_tokens=8,
    ...     messages=[{"role": "user", "content": "Say hello."}])
    >>> answer = asyncio.run(model.complete(request))
    >>> answer.usage.completion_tokens <= 8
    True
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from genai_factory.serving.registry import resolve_model_path
from genai_factory.shared.errors import ServiceUnavailable, ValidationError
from genai_factory.shared.models import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    parse,
)

if TYPE_CHECKING:
    from llama_cpp import Llama

__all__ = ["LlamaCppChatModel"]

_DONE = object()


def _default_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)


class LlamaCppChatModel:
    """A GGUF chat model run by llama.cpp in this process.

    Args:
        model: a packaged model's name (``smollm2``) or a path to a ``.gguf`` file.
        context_window: tokens of context to allocate (prompt + answer).
        threads: CPU threads for generation (default: the CPUs this process may use).
        default_max_tokens: the answer's cap when a request sets none.
        seed: the sampler's seed when a request sets none, so runs repeat.
    """

    def __init__(
        self,
        model: str = "smollm2",
        context_window: int = 2048,
        threads: int | None = None,
        default_max_tokens: int = 256,
        seed: int = 0,
    ) -> None:
        if context_window < 64:
            raise ValueError("context_window must be at least 64 tokens")
        if default_max_tokens < 1:
            raise ValueError("default_max_tokens must be at least 1")
        self.model = model
        self.context_window = context_window
        self.threads = threads
        self.default_max_tokens = default_max_tokens
        self.seed = seed
        self._path: Path = resolve_model_path(model)
        self._llama: Llama | None = None
        self._load_lock = threading.Lock()
        self._turn: asyncio.Lock | None = None

    def _load(self) -> Llama:
        with self._load_lock:
            if self._llama is None:
                from llama_cpp import Llama  # heavy import: only when a model is used

                self._llama = Llama(
                    model_path=str(self._path),
                    n_ctx=self.context_window,
                    n_threads=self.threads or _default_threads(),
                    seed=self.seed,
                    verbose=False,
                )
            return self._llama

    def _turn_lock(self) -> asyncio.Lock:
        if self._turn is None:
            self._turn = asyncio.Lock()
        return self._turn

    def _arguments(self, request: ChatCompletionRequest) -> dict[str, Any]:
        messages = [message.model_dump(exclude_none=True) for message in request.messages]
        args: dict[str, Any] = {
            "messages": messages,
            "max_tokens": request.output_limit or self.default_max_tokens,
            "seed": request.seed if request.seed is not None else self.seed,
        }
        if request.temperature is not None:
            args["temperature"] = request.temperature
        if request.top_p is not None:
            args["top_p"] = request.top_p
        if request.stop is not None:
            args["stop"] = request.stop
        if request.presence_penalty is not None:
            args["presence_penalty"] = request.presence_penalty
        if request.frequency_penalty is not None:
            args["frequency_penalty"] = request.frequency_penalty
        if request.tools:
            args["tools"] = [tool.model_dump(exclude_none=True) for tool in request.tools]
        if request.tool_choice is not None:
            choice = request.tool_choice
            args["tool_choice"] = choice if isinstance(choice, str) else choice.model_dump()
        if request.response_format is not None and request.response_format.type != "text":
            fmt = request.response_format
            # llama.cpp constrains output with a grammar built from the schema (json_object + schema)
            schema = fmt.json_schema.schema_ if fmt.json_schema is not None else fmt.schema_
            args["response_format"] = {"type": "json_object"} | (
                {"schema": schema} if schema else {}
            )
        return args

    def _check_context(self, llama: Llama, args: dict[str, Any]) -> None:
        text = "\n".join(str(m.get("content") or "") for m in args["messages"])
        prompt_tokens = len(llama.tokenize(text.encode("utf-8"), add_bos=False, special=True))
        if prompt_tokens >= self.context_window:
            raise ValidationError(
                f"this model's context window is {self.context_window} tokens; the messages alone "
                f"take {prompt_tokens}",
                param="messages",
                code="context_length_exceeded",
            )

    async def complete(self, request: ChatCompletionRequest) -> ChatCompletionResponse:
        """One answer to ``request``."""
        async with self._turn_lock():
            llama = await asyncio.to_thread(self._load)
            args = self._arguments(request)
            self._check_context(llama, args)
            result = await asyncio.to_thread(self._run, llama, args)
        response = parse(ChatCompletionResponse, result)
        response.model = request.model
        return response

    @staticmethod
    def _run(llama: Llama, args: dict[str, Any]) -> Any:
        try:
            return llama.create_chat_completion(**args)
        except ValueError as exc:  # llama.cpp's way of saying the prompt does not fit
            raise ValidationError(
                str(exc), param="messages", code="context_length_exceeded"
            ) from None

    async def stream(self, request: ChatCompletionRequest) -> AsyncIterator[ChatCompletionChunk]:
        """Chunks of the answer as they are generated; the last carries the finish reason."""
        async with self._turn_lock():
            llama = await asyncio.to_thread(self._load)
            args = self._arguments(request) | {"stream": True}
            self._check_context(llama, args)
            loop = asyncio.get_running_loop()
            queue: asyncio.Queue[Any] = asyncio.Queue()
            stop = threading.Event()

            def produce() -> None:
                chunks: Iterator[Any] | None = None
                try:
                    chunks = cast(Iterator[Any], llama.create_chat_completion(**args))
                    for chunk in chunks:
                        if stop.is_set():
                            break
                        loop.call_soon_threadsafe(queue.put_nowait, chunk)
                except Exception as exc:  # handed to the consumer, which raises it
                    loop.call_soon_threadsafe(queue.put_nowait, exc)
                finally:
                    close = getattr(chunks, "close", None)
                    if close is not None:
                        close()  # ends llama.cpp's generator now, not at garbage collection
                    loop.call_soon_threadsafe(queue.put_nowait, _DONE)

            worker = threading.Thread(target=produce, name="llamacpp-stream", daemon=True)
            worker.start()
            try:
                while (item := await queue.get()) is not _DONE:
                    if isinstance(item, ValueError):
                        raise ValidationError(
                            str(item), param="messages", code="context_length_exceeded"
                        )
                    if isinstance(item, Exception):
                        raise ServiceUnavailable(f"llama.cpp generation failed: {item}")
                    chunk = parse(ChatCompletionChunk, item)
                    chunk.model = request.model
                    yield chunk
            finally:
                # a closed or cancelled stream stops generation before the next request's turn
                stop.set()
                await asyncio.to_thread(worker.join)

    def to_params(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "context_window": self.context_window,
            "threads": self.threads,
            "default_max_tokens": self.default_max_tokens,
            "seed": self.seed,
        }
