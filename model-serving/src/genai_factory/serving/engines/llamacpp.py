"""The llama.cpp engine: a GGUF model behind the ChatModel contract, for the offline default.

llama.cpp's context is not thread-safe and generates one sequence at a time, so requests take
turns (an asyncio lock) and each generation runs in a worker thread that hands chunks to the event
loop. Closing a stream (or cancelling its task) stops generation at the next token and frees the
model for the next request.

A model server drives it through a few optional methods beside the ChatModel contract:
``load()`` (read the weights now instead of on the first request), ``close()`` (free them),
``memory_bytes()`` (what it holds, for a memory budget) and ``stats()`` (gauges for /metrics).

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
import contextlib
import json
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
    ChatMessage,
    Usage,
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

    def load(self) -> None:
        """Read the weights and run one token through them now (blocking), so the first
        request does not pay for paging the file in."""
        with self._load_lock:
            fresh = self._llama is None
        llama = self._load()
        if fresh:
            llama.eval(llama.tokenize(b"Hello", add_bos=True))
            llama.reset()  # type: ignore[no-untyped-call]

    def close(self) -> None:
        """Free the weights and the context; the next request loads them again."""
        with self._load_lock:
            llama, self._llama = self._llama, None
        if llama is not None:
            llama.close()

    @property
    def loaded(self) -> bool:
        return self._llama is not None

    def memory_bytes(self) -> int:
        """Weights plus the KV cache for ``context_window`` tokens (the cache once loaded)."""
        total = self._path.stat().st_size
        llama = self._llama
        if llama is not None:
            meta = llama.metadata
            arch = meta.get("general.architecture", "llama")
            try:
                layers = int(meta[f"{arch}.block_count"])
                width = int(meta[f"{arch}.embedding_length"])
                heads = int(meta[f"{arch}.attention.head_count"])
                kv_heads = int(meta.get(f"{arch}.attention.head_count_kv", heads))
            except (KeyError, ValueError):
                return total
            # keys and values, f16 (2 bytes), for every layer and every token of the context
            total += 2 * layers * self.context_window * (width // heads) * kv_heads * 2
        return total

    def stats(self) -> dict[str, float]:
        """Gauges for a server's /metrics: context tokens held by the last sequence."""
        llama = self._llama
        busy = 1.0 if self._turn is not None and self._turn.locked() else 0.0
        return {
            "batch_size": busy,
            "context_tokens_used": float(llama.n_tokens) if llama is not None else 0.0,
        }

    def _turn_lock(self) -> asyncio.Lock:
        if self._turn is None:
            self._turn = asyncio.Lock()
        return self._turn

    @staticmethod
    def _message(index: int, message: ChatMessage) -> dict[str, Any]:
        """A message as the chat template expects it: text content, never None or parts."""
        if isinstance(message.content, list):
            for part_index, part in enumerate(message.content):
                if part.type != "text":
                    raise ValidationError(
                        f"this model reads text only; content part of type '{part.type}' "
                        "is not supported",
                        param=f"messages.{index}.content.{part_index}",
                        code="unsupported_content",
                    )
        data = message.model_dump(exclude_none=True)
        data["content"] = message.text()
        if message.tool_calls and not data["content"]:
            # the template renders content only: show the model the calls it made
            data["content"] = json.dumps(
                [call.function.model_dump() for call in message.tool_calls], ensure_ascii=False
            )
        return data

    def _arguments(self, request: ChatCompletionRequest) -> dict[str, Any]:
        messages = [self._message(i, message) for i, message in enumerate(request.messages)]
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
            work = asyncio.ensure_future(asyncio.to_thread(self._run, llama, args))
            try:
                result = await asyncio.shield(work)
            except asyncio.CancelledError:
                # the caller gave up, but llama.cpp cannot be interrupted mid-answer (stream()
                # can): keep the turn until the thread ends, so no other request touches the
                # context meanwhile. max_tokens bounds the wait.
                with contextlib.suppress(Exception):
                    await work
                raise
        response = parse(ChatCompletionResponse, result)
        response.model = request.model
        return response

    @staticmethod
    def _run(llama: Llama, args: dict[str, Any]) -> Any:
        try:
            return llama.create_chat_completion(**args)
        except Exception as exc:
            raise _client_error(exc) from None

    async def stream(self, request: ChatCompletionRequest) -> AsyncIterator[ChatCompletionChunk]:
        """Chunks of the answer as they are generated; the last carries the finish reason."""
        async with self._turn_lock():
            llama = await asyncio.to_thread(self._load)
            args = self._arguments(request) | {"stream": True}
            self._check_context(llama, args)
            loop = asyncio.get_running_loop()
            queue: asyncio.Queue[Any] = asyncio.Queue()
            stop = threading.Event()
            # the context holds exactly the prompt when the first chunk comes out
            prompt_tokens: list[int] = []

            def produce() -> None:
                chunks: Iterator[Any] | None = None
                try:
                    chunks = cast(Iterator[Any], llama.create_chat_completion(**args))
                    for chunk in chunks:
                        if stop.is_set():
                            break
                        if not prompt_tokens:
                            prompt_tokens.append(llama.n_tokens)
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
            completion_tokens = 0
            last: ChatCompletionChunk | None = None
            try:
                while (item := await queue.get()) is not _DONE:
                    if isinstance(item, Exception):
                        raise _client_error(item)
                    chunk = parse(ChatCompletionChunk, item)
                    chunk.model = request.model
                    # llama.cpp streams one token per chunk
                    completion_tokens += sum(
                        1 for c in chunk.choices if c.delta.content or c.delta.tool_calls
                    )
                    last = chunk
                    yield chunk
                options = request.stream_options
                if options is not None and options.include_usage and last is not None:
                    usage = Usage(
                        prompt_tokens=prompt_tokens[0] if prompt_tokens else 0,
                        completion_tokens=completion_tokens,
                    )
                    yield ChatCompletionChunk(
                        id=last.id, model=request.model, created=last.created, usage=usage
                    )
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


def _client_error(exc: Exception) -> Exception:
    """llama.cpp's exceptions, sorted into the client's mistakes (400) and ours (503)."""
    from jinja2 import TemplateError

    if isinstance(exc, ValidationError | ServiceUnavailable):
        return exc
    if isinstance(exc, ValueError):  # llama.cpp's way of saying the prompt does not fit
        return ValidationError(str(exc), param="messages", code="context_length_exceeded")
    if isinstance(exc, TemplateError):  # the messages do not fit the model's chat template
        return ValidationError(
            f"the messages do not fit this model's chat template: {exc}",
            param="messages",
            code="invalid_messages",
        )
    return ServiceUnavailable(f"llama.cpp generation failed: {type(exc).__name__}: {exc}")
