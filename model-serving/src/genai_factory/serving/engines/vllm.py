"""The vLLM engine: vLLM's in-process async engine behind the ChatModel contract, for GPU hosts.

vLLM is an optional extra (``pip install 'genai-factory-model-serving[gpu]'``): its wheel is built
for CUDA and pins its own torch, so it is never installed on the CPU machines this project is
tested on. This module imports without it; vLLM is imported on first use (``load()`` or the first
request), and a missing install is a :class:`~genai_factory.shared.errors.ConfigError` that says
which extra to install.

The request-to-``SamplingParams`` mapping and the log-probability conversion are pure functions,
so they are tested everywhere; generation itself runs only where vLLM and a GPU are present.

Example (the parts that need no vLLM):
    >>> from genai_factory.shared.models import ChatCompletionRequest
    >>> from genai_factory.serving.engines.vllm import sampling_kwargs
    >>> request = ChatCompletionRequest(model="m", temperature=0, max_tokens=8, stop="END",
    ...     messages=[{"role": "user", "content": "Say hello."}])
    >>> sorted(sampling_kwargs(request, default_max_tokens=256).items())
    [('max_tokens', 8), ('n', 1), ('stop', ['END']), ('temperature', 0.0)]

With vLLM on a GPU host (not run here)::

    model = VLLMChatModel("/models/Qwen2.5-0.5B-Instruct", gpu_memory_utilization=0.4)
    answer = await model.complete(request)
    async for chunk in model.stream(request):  # closing the stream aborts the request
        ...
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from typing import Any

from genai_factory.serving.registry import PACKAGED_MODELS
from genai_factory.shared.errors import ConfigError, ServiceUnavailable, ValidationError
from genai_factory.shared.models import (
    ChatCompletionChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatMessage,
    ChunkChoice,
    ChunkDelta,
    FinishReason,
    Usage,
    new_id,
)

__all__ = ["VLLMChatModel", "import_vllm", "logprobs_json", "sampling_kwargs"]


def import_vllm() -> Any:
    """The ``vllm`` module, or a ConfigError naming the extra that provides it."""
    try:
        # import_module keeps mypy from looking for stubs vLLM does not ship
        return importlib.import_module("vllm")
    except ImportError as exc:
        raise ConfigError(
            "the vLLM engine needs vllm, which is not installed: install the GPU extra "
            "(pip install 'genai-factory-model-serving[gpu]') on a CUDA host, or use the "
            f"llamacpp or torch engine ({exc})",
            param="engine",
            code="vllm_not_installed",
        ) from None


def sampling_kwargs(
    request: ChatCompletionRequest, *, default_max_tokens: int, seed: int | None = None
) -> dict[str, Any]:
    """Keyword arguments for ``vllm.SamplingParams`` that carry out ``request``.

    Only what the request sets is passed, so vLLM's own defaults apply to the rest. Tools and
    JSON mode are refused (400): this adapter does not wire vLLM's structured outputs.
    """
    if request.tools or (request.tool_choice not in (None, "none")):
        raise ValidationError(
            "tools are not supported by the vLLM engine here; use the llamacpp engine",
            param="tools",
            code="unsupported",
        )
    if request.response_format is not None and request.response_format.type != "text":
        raise ValidationError(
            "JSON mode is not supported by the vLLM engine here; use the llamacpp engine",
            param="response_format",
            code="unsupported",
        )
    kwargs: dict[str, Any] = {
        "n": request.n,
        "max_tokens": request.output_limit or default_max_tokens,
    }
    if request.temperature is not None:
        kwargs["temperature"] = request.temperature
    if request.top_p is not None:
        kwargs["top_p"] = request.top_p
    if request.stop is not None:
        kwargs["stop"] = [request.stop] if isinstance(request.stop, str) else list(request.stop)
    chosen_seed = request.seed if request.seed is not None else seed
    if chosen_seed is not None:
        kwargs["seed"] = chosen_seed
    if request.presence_penalty is not None:
        kwargs["presence_penalty"] = request.presence_penalty
    if request.frequency_penalty is not None:
        kwargs["frequency_penalty"] = request.frequency_penalty
    if request.logprobs:
        # vLLM returns the sampled token's log-prob plus this many alternatives
        kwargs["logprobs"] = request.top_logprobs or 0
    elif request.top_logprobs:
        raise ValidationError(
            "top_logprobs needs logprobs: true", param="top_logprobs", code="invalid_value"
        )
    if request.logit_bias:
        try:
            kwargs["logit_bias"] = {int(token): bias for token, bias in request.logit_bias.items()}
        except ValueError:
            raise ValidationError(
                "logit_bias keys must be token ids", param="logit_bias", code="invalid_value"
            ) from None
    return kwargs


def logprobs_json(
    token_ids: Sequence[int], positions: Sequence[Mapping[int, Any] | None], top: int
) -> dict[str, Any]:
    """vLLM's per-token ``{token_id: Logprob}`` maps as OpenAI's ``logprobs`` object.

    Each ``Logprob`` has ``logprob``, ``rank`` and ``decoded_token``; the sampled token is always
    in its position's map, the ``top`` best by rank become ``top_logprobs``.
    """

    def entry(token_id: int, info: Any) -> dict[str, Any]:
        text = info.decoded_token if info.decoded_token is not None else ""
        return {"token": text, "logprob": float(info.logprob), "bytes": list(text.encode())}

    content: list[dict[str, Any]] = []
    for token_id, position in zip(token_ids, positions, strict=False):
        if not position or token_id not in position:
            continue
        ranked = sorted(position.items(), key=lambda item: item[1].rank or 0)[:top]
        content.append(
            entry(token_id, position[token_id])
            | {"top_logprobs": [entry(other, info) for other, info in ranked]}
        )
    return {"content": content}


def _finish_reason(reason: str | None) -> FinishReason | None:
    if reason is None or reason in ("stop", "length"):
        return reason  # type: ignore[return-value]
    return "error"  # vLLM's "abort" and anything newer


class VLLMChatModel:
    """A chat model run by vLLM's async engine in this process (GPU hosts).

    Args:
        model: a packaged model's name (``smollm2``: its GGUF file), a local model directory or
            a ``.gguf`` path (anything vLLM's ``model`` accepts; nothing is downloaded when
            ``HF_HUB_OFFLINE=1``).
        tokenizer: a tokenizer directory when it differs from ``model`` (GGUF files: the base
            model's tokenizer loads faster than the one converted from the file).
        max_model_len: tokens of context per sequence (prompt + answer).
        gpu_memory_utilization: the share of GPU memory vLLM may take (weights + KV cache).
        dtype: weights' dtype (``auto``, ``float16``, ``bfloat16``).
        quantization: vLLM's quantization method (``gptq``, ``awq``, ``fp8``, ...) or None to
            read it from the checkpoint.
        seed: the sampler's seed when a request sets none.
        default_max_tokens: the answer's cap when a request sets none.
        engine_options: further ``AsyncEngineArgs`` fields, passed as they are.
    """

    def __init__(
        self,
        model: str = "smollm2",
        tokenizer: str | None = None,
        max_model_len: int = 2048,
        gpu_memory_utilization: float = 0.5,
        dtype: str = "auto",
        quantization: str | None = None,
        seed: int | None = 0,
        default_max_tokens: int = 256,
        engine_options: Mapping[str, Any] | None = None,
    ) -> None:
        if max_model_len < 64:
            raise ValueError("max_model_len must be at least 64 tokens")
        if not 0.0 < gpu_memory_utilization <= 1.0:
            raise ValueError("gpu_memory_utilization must be in (0, 1]")
        if default_max_tokens < 1:
            raise ValueError("default_max_tokens must be at least 1")
        self.model = model
        self.tokenizer = tokenizer
        self.max_model_len = max_model_len
        self.gpu_memory_utilization = gpu_memory_utilization
        self.dtype = dtype
        self.quantization = quantization
        self.seed = seed
        self.default_max_tokens = default_max_tokens
        self.engine_options = dict(engine_options or {})
        self._engine: Any = None
        self._tokenizer: Any = None
        self._sampling_params: Any = None
        self._load_lock = threading.Lock()
        self._running = 0

    def engine_args(self) -> dict[str, Any]:
        """Keyword arguments for ``vllm.AsyncEngineArgs``."""
        model = self.model
        if model in PACKAGED_MODELS:
            model = str(PACKAGED_MODELS[model].path())
        args: dict[str, Any] = {
            "model": model,
            "max_model_len": self.max_model_len,
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "dtype": self.dtype,
            "seed": self.seed if self.seed is not None else 0,
        }
        if self.tokenizer is not None:
            args["tokenizer"] = self.tokenizer
        if self.quantization is not None:
            args["quantization"] = self.quantization
        return args | self.engine_options

    def load(self) -> None:
        """Start vLLM's engine now (blocking: it loads the weights and sizes the KV cache)."""
        with self._load_lock:
            if self._engine is None:
                vllm = import_vllm()
                engine_args = vllm.AsyncEngineArgs(**self.engine_args())
                self._engine = vllm.AsyncLLMEngine.from_engine_args(engine_args)
                self._sampling_params = vllm.SamplingParams

    def use_engine(self, engine: Any, sampling_params: Any = None) -> None:
        """Serve from an engine started elsewhere (e.g. with options ``engine_args`` lacks).

        ``engine`` needs vLLM's async-engine methods ``generate``, ``abort`` and
        ``get_tokenizer``; ``sampling_params`` builds the per-request parameters (default:
        ``vllm.SamplingParams``).
        """
        with self._load_lock:
            self._engine, self._tokenizer = engine, None
            self._sampling_params = sampling_params or import_vllm().SamplingParams

    def close(self) -> None:
        """Stop the engine and free the GPU; the next request starts it again."""
        with self._load_lock:
            engine, self._engine, self._tokenizer = self._engine, None, None
            self._sampling_params = None
        shutdown = getattr(engine, "shutdown", None)
        if callable(shutdown):
            shutdown()

    @property
    def loaded(self) -> bool:
        return self._engine is not None

    def stats(self) -> dict[str, float]:
        """Gauges for a server's /metrics: requests inside vLLM's scheduler from here."""
        return {"batch_size": float(self._running)}

    async def _ready(self) -> tuple[Any, Any]:
        if self._engine is None:
            await asyncio.to_thread(self.load)
        engine = self._engine
        if self._tokenizer is None:
            tokenizer = engine.get_tokenizer()
            self._tokenizer = await tokenizer if inspect.isawaitable(tokenizer) else tokenizer
        return engine, self._tokenizer

    @staticmethod
    def _message(index: int, message: ChatMessage) -> dict[str, Any]:
        if isinstance(message.content, list):
            for part_index, part in enumerate(message.content):
                if part.type != "text":
                    raise ValidationError(
                        f"this engine reads text only; content part of type '{part.type}' "
                        "is not supported",
                        param=f"messages.{index}.content.{part_index}",
                        code="unsupported_content",
                    )
        return {"role": message.role, "content": message.text()}

    def _prompt(self, tokenizer: Any, request: ChatCompletionRequest, max_tokens: int) -> Any:
        messages = [self._message(i, message) for i, message in enumerate(request.messages)]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        # the template already holds the special tokens (BOS): encode it as it is
        token_ids = list(tokenizer.encode(text, add_special_tokens=False))
        if len(token_ids) + max_tokens > self.max_model_len:
            raise ValidationError(
                f"this model's context is {self.max_model_len} tokens; the messages take "
                f"{len(token_ids)} and max_tokens asks for {max_tokens}",
                param="messages",
                code="context_length_exceeded",
            )
        return {"prompt_token_ids": token_ids}

    async def _outputs(self, request: ChatCompletionRequest) -> AsyncGenerator[Any, None]:
        """vLLM's RequestOutputs (cumulative) for ``request``; leaving early aborts it."""
        engine, tokenizer = await self._ready()
        kwargs = sampling_kwargs(
            request, default_max_tokens=self.default_max_tokens, seed=self.seed
        )
        prompt = self._prompt(tokenizer, request, kwargs["max_tokens"])
        params = self._sampling_params(**kwargs)
        request_id = new_id("vllm")
        finished = False
        self._running += 1
        generator = engine.generate(prompt, params, request_id)
        try:
            async for output in generator:
                finished = bool(output.finished)
                yield output
        except ValueError as exc:  # vLLM's way of refusing a request (length, parameters)
            raise ValidationError(str(exc), param="messages", code="invalid_request") from None
        except Exception as exc:
            raise ServiceUnavailable(f"vLLM generation failed: {type(exc).__name__}") from exc
        finally:
            self._running -= 1
            with contextlib.suppress(Exception):
                await generator.aclose()
            if not finished:
                # the caller closed the stream or was cancelled: free the sequence's KV blocks
                with contextlib.suppress(Exception):
                    await engine.abort(request_id)

    async def complete(self, request: ChatCompletionRequest) -> ChatCompletionResponse:
        """All ``n`` answers to ``request`` at once."""
        last: Any = None
        outputs = self._outputs(request)
        try:
            async for output in outputs:
                last = output
        finally:
            await outputs.aclose()
        if last is None:
            raise ServiceUnavailable("vLLM returned no output")
        choices = []
        for completion in sorted(last.outputs, key=lambda c: c.index):
            choice = ChatCompletionChoice(
                index=completion.index,
                message=ChatMessage(role="assistant", content=completion.text),
                finish_reason=_finish_reason(completion.finish_reason),
            )
            if request.logprobs and completion.logprobs is not None:
                choice.logprobs = logprobs_json(
                    completion.token_ids, completion.logprobs, request.top_logprobs or 0
                )
            choices.append(choice)
        return ChatCompletionResponse(
            id=new_id("chatcmpl"),
            model=request.model,
            choices=choices,
            usage=Usage(
                prompt_tokens=len(last.prompt_token_ids or []),
                completion_tokens=sum(len(c.token_ids) for c in last.outputs),
            ),
        )

    async def stream(self, request: ChatCompletionRequest) -> AsyncIterator[ChatCompletionChunk]:
        """Chunks as tokens arrive (one choice per chunk); closing the stream aborts vLLM's
        request. With ``stream_options.include_usage`` a last chunk carries the usage."""
        chunk_id = new_id("chatcmpl")
        seen_text: dict[int, int] = {}
        seen_tokens: dict[int, int] = {}
        last: Any = None
        outputs = self._outputs(request)
        try:
            async for output in outputs:
                last = output
                for completion in output.outputs:
                    index = completion.index
                    text_start = seen_text.get(index, 0)
                    token_start = seen_tokens.get(index, 0)
                    new_text = completion.text[text_start:]
                    new_tokens = list(completion.token_ids[token_start:])
                    reason = _finish_reason(completion.finish_reason)
                    if not new_text and not new_tokens and reason is None:
                        continue
                    delta = ChunkDelta(content=new_text)
                    if index not in seen_text:
                        delta.role = "assistant"
                    choice = ChunkChoice(index=index, delta=delta, finish_reason=reason)
                    if request.logprobs and completion.logprobs is not None:
                        choice.logprobs = logprobs_json(
                            new_tokens,
                            completion.logprobs[token_start:],
                            request.top_logprobs or 0,
                        )
                    seen_text[index] = len(completion.text)
                    seen_tokens[index] = len(completion.token_ids)
                    yield ChatCompletionChunk(id=chunk_id, model=request.model, choices=[choice])
        finally:
            await outputs.aclose()
        options = request.stream_options
        if options is not None and options.include_usage and last is not None:
            usage = Usage(
                prompt_tokens=len(last.prompt_token_ids or []),
                completion_tokens=sum(seen_tokens.values()),
            )
            yield ChatCompletionChunk(id=chunk_id, model=request.model, usage=usage)

    def to_params(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "tokenizer": self.tokenizer,
            "max_model_len": self.max_model_len,
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "dtype": self.dtype,
            "quantization": self.quantization,
            "seed": self.seed,
            "default_max_tokens": self.default_max_tokens,
            "engine_options": dict(self.engine_options),
        }
