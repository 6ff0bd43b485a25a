"""The torch engine behind the shared ``ChatModel`` contract (OpenAI-shaped answers and chunks).

Messages go through the tokenizer's own chat template; the answer is detokenised incrementally
(text that may still change, a partial UTF-8 character or a possible stop string, is held back).
``n > 1`` runs ``n`` requests side by side in the batch (the prompt's KV is shared through the
prefix cache). Closing a stream, or cancelling its task, cancels the request in the engine.

Example (loads the packaged model, ~20 s):

    model = TorchChatModel("smollm2", max_batch_size=16)
    request = ChatCompletionRequest(model="smollm2", max_tokens=16, temperature=0,
                                    messages=[{"role": "user", "content": "Say hello."}])
    print((await model.complete(request)).text())
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

from genai_factory.serving.torch_engine.engine import TorchEngine
from genai_factory.serving.torch_engine.sampling import SamplingParams, TokenLogprob
from genai_factory.shared.errors import ValidationError
from genai_factory.shared.models import (
    ChatCompletionChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatMessage,
    ChunkChoice,
    ChunkDelta,
    Usage,
    new_id,
)

__all__ = ["TorchChatModel"]


@dataclass(slots=True)
class _Piece:
    """What one choice produced since the last piece."""

    index: int
    text: str = ""
    finish_reason: str | None = None
    logprobs: list[TokenLogprob] = field(default_factory=list)
    completion_tokens: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0


class _Detokenizer:
    """Token ids -> text deltas, holding back what a later token or a stop string may change."""

    def __init__(self, tokenizer: Any, stops: list[str]) -> None:
        self._tokenizer = tokenizer
        self._stops = [stop for stop in stops if stop]
        self._hold = max((len(stop) for stop in self._stops), default=1) - 1
        self._ids: list[int] = []
        self._sent = 0
        self.text = ""
        self.stopped = False

    def add(self, token_ids: tuple[int, ...], final: bool) -> str:
        self._ids.extend(token_ids)
        text = self._tokenizer.decode(self._ids, skip_special_tokens=True)
        for stop in self._stops:
            found = text.find(stop, max(0, self._sent - len(stop)))
            if found >= 0:
                text = text[:found]
                self.stopped = True
        self.text = text
        ready = len(text)
        if not (final or self.stopped):
            ready -= self._hold
            while ready > self._sent and text[ready - 1] == "\ufffd":  # a partial character
                ready -= 1
        delta = text[self._sent : ready] if ready > self._sent else ""
        self._sent = max(self._sent, ready)
        return delta


class TorchChatModel:
    """A ``ChatModel`` served by our continuous-batching torch engine.

    Every argument but ``default_max_tokens`` and ``default_temperature`` goes to
    :class:`~genai_factory.serving.torch_engine.engine.TorchEngine`, whose docstring explains it.

    Args:
        model: a packaged model's name (``smollm2``) or a ``.gguf`` path.
        default_max_tokens: the answer's cap when a request sets none.
        default_temperature: the temperature when a request sets none.
    """

    def __init__(
        self,
        model: str = "smollm2",
        default_max_tokens: int = 256,
        default_temperature: float = 1.0,
        block_size: int = 16,
        kv_cache_mb: int = 256,
        max_batch_size: int = 32,
        max_batched_tokens: int = 2048,
        max_model_len: int = 2048,
        enable_prefix_caching: bool = True,
        quantization: str = "none",
        speculative: str | None = None,
        num_speculative_tokens: int = 4,
        draft_layers: int = 8,
        adaptive_speculation: bool = False,
        speculative_max_batch_size: int | None = None,
        threads: int | None = None,
        seed: int = 0,
    ) -> None:
        if default_max_tokens < 1:
            raise ValueError("default_max_tokens must be at least 1")
        self.default_max_tokens = default_max_tokens
        self.default_temperature = default_temperature
        self.engine = TorchEngine(
            model,
            block_size=block_size,
            kv_cache_mb=kv_cache_mb,
            max_batch_size=max_batch_size,
            max_batched_tokens=max_batched_tokens,
            max_model_len=max_model_len,
            enable_prefix_caching=enable_prefix_caching,
            quantization=quantization,
            speculative=speculative,
            num_speculative_tokens=num_speculative_tokens,
            draft_layers=draft_layers,
            adaptive_speculation=adaptive_speculation,
            speculative_max_batch_size=speculative_max_batch_size,
            threads=threads,
            seed=seed,
        )

    @classmethod
    def over(
        cls,
        engine: TorchEngine,
        default_max_tokens: int = 256,
        default_temperature: float = 1.0,
    ) -> TorchChatModel:
        """A chat model over an existing engine (e.g. one that shares loaded weights)."""
        chat = cls.__new__(cls)
        chat.default_max_tokens = default_max_tokens
        chat.default_temperature = default_temperature
        chat.engine = engine
        return chat

    def to_params(self) -> dict[str, Any]:
        engine = self.engine
        return {
            "model": engine.model,
            "default_max_tokens": self.default_max_tokens,
            "default_temperature": self.default_temperature,
            "block_size": engine.block_size,
            "kv_cache_mb": engine.kv_cache_mb,
            "max_batch_size": engine.max_batch_size,
            "max_batched_tokens": engine.max_batched_tokens,
            "max_model_len": engine.max_model_len,
            "enable_prefix_caching": engine.enable_prefix_caching,
            "quantization": engine.quantization,
            "speculative": engine.speculative,
            "num_speculative_tokens": engine.num_speculative_tokens,
            "draft_layers": engine.draft_layers,
            "adaptive_speculation": engine.adaptive_speculation,
            "speculative_max_batch_size": engine.speculative_max_batch_size,
            "threads": engine.threads,
            "seed": engine.seed,
        }

    def stats(self) -> dict[str, float]:
        """The engine's live figures, which the serving layer exports on /metrics."""
        return self.engine.gauges()

    async def close(self) -> None:
        await self.engine.close()

    # ------------------------------------------------------------------ the contract

    async def complete(self, request: ChatCompletionRequest) -> ChatCompletionResponse:
        """One answer (``n`` choices) to ``request``."""
        prompt_ids, params, stops = await self._prepare(request)

        async def collect(index: int) -> tuple[str, _Piece]:
            total = _Piece(index)
            text = ""
            async for piece in self._choice(index, prompt_ids, params, stops):
                text += piece.text
                total.logprobs.extend(piece.logprobs)
                total.finish_reason = piece.finish_reason or total.finish_reason
                total.completion_tokens += piece.completion_tokens
                total.prompt_tokens, total.cached_tokens = piece.prompt_tokens, piece.cached_tokens
            return text, total

        results = await asyncio.gather(*(collect(i) for i in range(request.n)))
        choices = [
            ChatCompletionChoice(
                index=piece.index,
                message=ChatMessage(role="assistant", content=text),
                finish_reason=piece.finish_reason,  # type: ignore[arg-type]
                logprobs=self._logprobs_json(piece.logprobs)
                if params.logprobs is not None
                else None,
            )
            for text, piece in results
        ]
        first = results[0][1]
        return ChatCompletionResponse(
            model=request.model,
            choices=choices,
            usage=self._usage(first, sum(piece.completion_tokens for _, piece in results)),
        )

    async def stream(self, request: ChatCompletionRequest) -> AsyncIterator[ChatCompletionChunk]:
        """Chunks of the answer as tokens arrive; the last of each choice has a finish reason."""
        prompt_ids, params, stops = await self._prepare(request)
        chunk_id = new_id("chatcmpl")
        for index in range(request.n):
            yield self._chunk(request, chunk_id, index, ChunkDelta(role="assistant", content=""))
        completion_tokens = 0
        first: _Piece | None = None
        async for piece in self._merged(prompt_ids, params, stops, request.n):
            completion_tokens += piece.completion_tokens
            first = first or piece
            if piece.text or piece.finish_reason or piece.logprobs:
                chunk = self._chunk(
                    request, chunk_id, piece.index, ChunkDelta(content=piece.text or None)
                )
                chunk.choices[0].finish_reason = piece.finish_reason  # type: ignore[assignment]
                if params.logprobs is not None and piece.logprobs:
                    chunk.choices[0].logprobs = self._logprobs_json(piece.logprobs)
                yield chunk
        if request.stream_options is not None and request.stream_options.include_usage:
            assert first is not None
            yield ChatCompletionChunk(
                id=chunk_id, model=request.model, usage=self._usage(first, completion_tokens)
            )

    # ------------------------------------------------------------------ helpers

    async def _prepare(
        self, request: ChatCompletionRequest
    ) -> tuple[list[int], SamplingParams, list[str]]:
        if request.tools and request.tool_choice != "none":
            raise ValidationError(
                "the torch engine does not call tools; use the llama.cpp engine",
                param="tools",
                code="unsupported",
            )
        if request.response_format is not None and request.response_format.type != "text":
            raise ValidationError(
                "the torch engine has no constrained JSON decoding; use the llama.cpp engine",
                param="response_format",
                code="unsupported",
            )
        await self.engine.start()
        messages = [
            {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
            for m in request.messages
        ]
        prompt_ids = self.engine.encode_chat(messages)
        temperature = (
            request.temperature if request.temperature is not None else self.default_temperature
        )
        params = SamplingParams(
            temperature=temperature,
            top_p=request.top_p if request.top_p else 1.0,
            max_tokens=request.output_limit or self.default_max_tokens,
            seed=request.seed,
            logprobs=(request.top_logprobs or 0) if request.logprobs else None,
        )
        stops = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
        return prompt_ids, params, stops

    async def _choice(
        self, index: int, prompt_ids: list[int], params: SamplingParams, stops: list[str]
    ) -> AsyncIterator[_Piece]:
        if index:  # each extra choice samples with its own seed
            base = params.seed if params.seed is not None else self.engine.seed
            params = replace(params, seed=base + index)
        detokenizer = _Detokenizer(self.engine.tokenizer, stops)
        stream = self.engine.stream(prompt_ids, params)
        try:
            async for event in stream:
                text = detokenizer.add(event.token_ids, event.finished)
                reason = "stop" if detokenizer.stopped else event.finish_reason
                yield _Piece(
                    index,
                    text,
                    reason if (event.finished or detokenizer.stopped) else None,
                    list(event.logprobs),
                    len(event.token_ids),
                    event.prompt_tokens,
                    event.cached_tokens,
                )
                if detokenizer.stopped:
                    break  # closing the stream below cancels the rest of the request
        finally:
            await stream.aclose()

    async def _merged(
        self, prompt_ids: list[int], params: SamplingParams, stops: list[str], n: int
    ) -> AsyncIterator[_Piece]:
        if n == 1:
            async for piece in self._choice(0, prompt_ids, params, stops):
                yield piece
            return
        queue: asyncio.Queue[_Piece | BaseException | None] = asyncio.Queue()

        async def pump(index: int) -> None:
            try:
                async for piece in self._choice(index, prompt_ids, params, stops):
                    await queue.put(piece)
            except Exception as exc:  # handed to the consumer, which raises it
                await queue.put(exc)
            finally:
                await queue.put(None)

        tasks = [asyncio.create_task(pump(index)) for index in range(n)]
        try:
            done = 0
            while done < n:
                item = await queue.get()
                if item is None:
                    done += 1
                elif isinstance(item, BaseException):
                    raise item
                else:
                    yield item
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def _chunk(
        self, request: ChatCompletionRequest, chunk_id: str, index: int, delta: ChunkDelta
    ) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            id=chunk_id, model=request.model, choices=[ChunkChoice(index=index, delta=delta)]
        )

    @staticmethod
    def _usage(piece: _Piece, completion_tokens: int) -> Usage:
        return Usage.model_validate(
            {
                "prompt_tokens": piece.prompt_tokens,
                "completion_tokens": completion_tokens,
                "prompt_tokens_details": {"cached_tokens": piece.cached_tokens},
            }
        )

    def _logprobs_json(self, logprobs: list[TokenLogprob]) -> dict[str, Any]:
        tokenizer = self.engine.tokenizer

        def entry(token_id: int, logprob: float) -> dict[str, Any]:
            text = tokenizer.decode([token_id])
            return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}

        return {
            "content": [
                entry(item.token_id, item.logprob)
                | {"top_logprobs": [entry(token, value) for token, value in item.top]}
                for item in logprobs
            ]
        }
