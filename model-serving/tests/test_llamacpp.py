"""The llama.cpp engine against the real packaged SmolLM2 model (no scripted model here)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from genai_factory.serving.engines.llamacpp import LlamaCppChatModel
from genai_factory.shared.contracts import ChatModel
from genai_factory.shared.errors import ValidationError
from genai_factory.shared.factory import build_component, dump_component
from genai_factory.shared.models import ChatCompletionRequest, StreamOptions

pytestmark = pytest.mark.integration


def _request(prompt: str, **extra: object) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {
            "model": "smollm2",
            "messages": [{"role": "user", "content": prompt}],
            "temperature": 0,
            **extra,
        }
    )


def test_it_satisfies_the_chat_model_contract(smollm2: LlamaCppChatModel) -> None:
    assert isinstance(smollm2, ChatModel)


async def test_answers_with_text_and_usage(smollm2: LlamaCppChatModel) -> None:
    answer = await smollm2.complete(_request("What is the capital of France?", max_tokens=24))
    assert answer.model == "smollm2"
    assert answer.text().strip()
    assert answer.usage is not None
    assert answer.usage.prompt_tokens > 5
    assert 0 < answer.usage.completion_tokens <= 24
    assert answer.choices[0].finish_reason in {"stop", "length"}


async def test_greedy_answers_repeat_and_streaming_matches(smollm2: LlamaCppChatModel) -> None:
    request = _request("Name three colours.", max_tokens=20)
    first = await smollm2.complete(request)
    second = await smollm2.complete(request)
    assert first.text() == second.text()
    pieces = [
        choice.delta.content or ""
        async for chunk in smollm2.stream(request)
        for choice in chunk.choices
    ]
    assert "".join(pieces) == first.text()


async def test_max_tokens_caps_the_answer_with_finish_reason_length(
    smollm2: LlamaCppChatModel,
) -> None:
    answer = await smollm2.complete(_request("Write a long story about a dragon.", max_tokens=4))
    assert answer.usage is not None and answer.usage.completion_tokens == 4
    assert answer.choices[0].finish_reason == "length"


async def test_the_stream_ends_with_a_finish_reason(smollm2: LlamaCppChatModel) -> None:
    finishes = [
        choice.finish_reason
        async for chunk in smollm2.stream(_request("Say hi.", max_tokens=6))
        for choice in chunk.choices
        if choice.finish_reason
    ]
    assert finishes and finishes[-1] in {"stop", "length"}


async def test_closing_a_stream_early_frees_the_model_at_once(smollm2: LlamaCppChatModel) -> None:
    stream = smollm2.stream(_request("Count from one to one hundred.", max_tokens=200))
    received = 0
    async for _ in stream:
        received += 1
        if received == 3:
            break
    await stream.aclose()
    # the next request gets its turn without waiting for 200 tokens of the abandoned one
    answer = await asyncio.wait_for(smollm2.complete(_request("Hi", max_tokens=3)), timeout=10)
    assert answer.usage is not None and answer.usage.completion_tokens <= 3


async def test_json_mode_gives_valid_json(smollm2: LlamaCppChatModel) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    answer = await smollm2.complete(
        _request(
            "Give the capital of Italy as JSON.",
            max_tokens=40,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "city", "schema": schema},
            },
        )
    )
    assert isinstance(json.loads(answer.text())["city"], str)


async def test_a_prompt_longer_than_the_context_is_a_validation_error(
    smollm2: LlamaCppChatModel,
) -> None:
    with pytest.raises(ValidationError) as info:
        await smollm2.complete(_request("word " * 3000, max_tokens=4))
    assert info.value.code == "context_length_exceeded"
    with pytest.raises(ValidationError):
        async for _ in smollm2.stream(_request("word " * 3000, max_tokens=4)):
            pass


def test_builds_from_config_and_dumps_back() -> None:
    spec = {
        "type": "genai_factory.serving.engines.llamacpp:LlamaCppChatModel",
        "params": {"model": "smollm2", "context_window": 512},
    }
    model = build_component(spec, ChatModel)
    assert dump_component(model)["params"]["context_window"] == 512
    assert build_component(dump_component(model), ChatModel).to_params() == model.to_params()


@pytest.mark.parametrize(
    "params",
    [{"context_window": 10}, {"default_max_tokens": 0}, {"parallel": 0}, {"parallel": 1000}],
)
def test_bad_engine_params_are_rejected(params: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="at least"):
        LlamaCppChatModel("smollm2", **params)


@pytest.mark.parametrize("width", [0, 5, -1, True, 2.0, "auto"])
def test_a_batch_width_outside_one_to_parallel_is_rejected(width: Any) -> None:
    with pytest.raises(ValueError, match="batch_width"):
        LlamaCppChatModel("smollm2", parallel=4, batch_width=width)


@pytest.mark.parametrize("flag", ["yes", 1, None])
def test_kv_unified_must_be_a_boolean(flag: Any) -> None:
    with pytest.raises(ValueError, match="kv_unified"):
        LlamaCppChatModel("smollm2", kv_unified=flag)


def test_batch_width_and_kv_unified_round_trip_through_config() -> None:
    model = LlamaCppChatModel("smollm2", parallel=8, batch_width=2, kv_unified=True)
    rebuilt = build_component(dump_component(model), ChatModel)
    assert isinstance(rebuilt, LlamaCppChatModel)
    assert (rebuilt.batch_width, rebuilt.kv_unified, rebuilt.parallel) == (2, True, 8)


async def test_text_parts_are_read_and_other_parts_refused(smollm2: LlamaCppChatModel) -> None:
    parts = [{"type": "text", "text": "Say"}, {"type": "text", "text": " hi."}]
    answer = await smollm2.complete(
        _request("", messages=[{"role": "user", "content": parts}], max_tokens=3)
    )
    assert answer.usage is not None and answer.usage.completion_tokens <= 3
    image = [{"type": "image_url", "image_url": {"url": "http://example.invalid/cat.png"}}]
    with pytest.raises(ValidationError) as info:
        await smollm2.complete(_request("", messages=[{"role": "user", "content": image}]))
    assert info.value.param == "messages.0.content.0"


async def test_a_history_with_tool_calls_is_rendered(smollm2: LlamaCppChatModel) -> None:
    call = {"id": "c1", "function": {"name": "lookup", "arguments": '{"q": "x"}'}}
    messages = [
        {"role": "user", "content": "Look up x."},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "x is 42"},
    ]
    answer = await smollm2.complete(_request("", messages=messages, max_tokens=4))
    assert answer.choices[0].message.role == "assistant"


async def test_stream_usage_matches_the_answers_usage(smollm2: LlamaCppChatModel) -> None:
    request = _request("Name a river.", max_tokens=6)
    await smollm2.complete(request)  # both runs below start from the cached prompt
    answer = await smollm2.complete(request)
    chunks = [
        chunk
        async for chunk in smollm2.stream(
            request.model_copy(update={"stream_options": StreamOptions(include_usage=True)})
        )
    ]
    assert chunks[-1].choices == [] and chunks[-1].usage == answer.usage
    plain = [chunk async for chunk in smollm2.stream(request)]
    assert all(chunk.usage is None for chunk in plain)


async def test_cancelling_an_answer_stops_generation_at_once(smollm2: LlamaCppChatModel) -> None:
    await smollm2.complete(_request("Say hi.", max_tokens=1))  # loaded, worker running
    before = smollm2.stats()["tokens_generated_total"]
    task = asyncio.create_task(smollm2.complete(_request("Tell a long story.", max_tokens=400)))
    # wait until it is generating, then give up on it
    for _ in range(2000):
        if smollm2.stats()["tokens_generated_total"] >= before + 3:
            break
        await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(2000):
        if smollm2.stats()["batch_size"] == 0:
            break
        await asyncio.sleep(0.005)
    assert smollm2.stats()["batch_size"] == 0
    stopped_at = smollm2.stats()["tokens_generated_total"]
    # a few tokens, not the 400 it was allowed, and none after the cancel took effect
    assert before + 3 <= stopped_at < before + 200
    await asyncio.sleep(0.2)
    assert smollm2.stats()["tokens_generated_total"] == stopped_at
    answer = await asyncio.wait_for(smollm2.complete(_request("Say hi.", max_tokens=3)), 30)
    assert answer.usage is not None and 0 < answer.usage.completion_tokens <= 3


def test_load_close_memory_and_stats() -> None:
    model = LlamaCppChatModel("smollm2", context_window=256, threads=1, parallel=2)
    weights = model.memory_bytes()
    assert weights == model._path.stat().st_size and not model.loaded
    idle = model.stats()
    assert idle["batch_size"] == 0.0 and idle["tokens_generated_total"] == 0.0
    assert idle["slots"] == 2.0 and idle["kv_tokens_total"] == 512.0
    model.load()
    assert model.loaded
    # loaded, it adds its KV cache: 30 layers x 2 slots x 256 tokens x 192 values x 2 (K, V)
    # x 2 bytes
    assert model.memory_bytes() == weights + 30 * 2 * 256 * 192 * 2 * 2
    assert model.stats()["slots"] == 2.0
    model.close()
    assert not model.loaded and model.stats()["tokens_generated_total"] == 0.0
    model.close()  # twice is fine
