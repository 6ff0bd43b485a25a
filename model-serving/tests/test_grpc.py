"""The gRPC API with a real grpc.aio client on 127.0.0.1 and the real model behind it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc  # type: ignore[import-untyped]
import pytest

from genai_factory.serving.engines.llamacpp import LlamaCppChatModel
from genai_factory.serving.rpc import serving_pb2, serving_pb2_grpc
from genai_factory.serving.rpc.server import start_grpc_server, status_code_for
from genai_factory.serving.server import ServerParts

pytestmark = pytest.mark.integration


@pytest.fixture
async def grpc_stub(
    make_parts: Callable[..., ServerParts],
) -> AsyncIterator[tuple[Any, ServerParts]]:
    parts = make_parts(model={"max_concurrency": 1, "max_queue": 0})
    await parts.start()
    server = await start_grpc_server(parts, "127.0.0.1", 0)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield serving_pb2_grpc.ServingStub(channel), parts
    finally:
        await channel.close()
        await server.stop(grace=1)


def request(prompt: str = "Say hello.", **fields: Any) -> Any:
    return serving_pb2.GenerateRequest(
        model=fields.pop("model", "smollm2"),
        messages=[serving_pb2.Message(role="user", content=prompt)],
        temperature=0,
        max_tokens=fields.pop("max_tokens", 8),
        **fields,
    )


async def test_generate_answers_with_usage(grpc_stub: tuple[Any, ServerParts]) -> None:
    stub, _ = grpc_stub
    answer = await stub.Generate(request("What is 2 + 2?"))
    assert answer.model == "smollm2" and answer.text.strip()
    assert answer.finish_reason in {"stop", "length"}
    assert 0 < answer.usage.completion_tokens <= 8
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens


async def test_the_stream_matches_the_unary_answer(grpc_stub: tuple[Any, ServerParts]) -> None:
    stub, _ = grpc_stub
    # llama.cpp's greedy answer to a prompt seen before (its prefix cached) can differ from the
    # first one: compare answers that both start from the cached prompt
    await stub.Generate(request("Name a colour."))
    unary = await stub.Generate(request("Name a colour."))
    chunks = [chunk async for chunk in stub.GenerateStream(request("Name a colour."))]
    assert "".join(c.text for c in chunks) == unary.text
    assert chunks[-1].finish_reason == unary.finish_reason
    assert chunks[-1].usage.completion_tokens == unary.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == unary.usage.prompt_tokens


async def test_a_json_schema_constrains_the_answer(grpc_stub: tuple[Any, ServerParts]) -> None:
    stub, _ = grpc_stub
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    answer = await stub.Generate(
        request("Give a number as JSON.", max_tokens=16, json_schema=json.dumps(schema))
    )
    assert isinstance(json.loads(answer.text)["n"], int)


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"model": "gpt-9"}, grpc.StatusCode.NOT_FOUND),
        ({"max_tokens": 10_000}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"max_tokens": 0}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"top_p": 3.0}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"json_schema": "{not json"}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"stop": ["a", "b", "c", "d", "e"]}, grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
async def test_mistakes_get_grpc_status_codes(
    grpc_stub: tuple[Any, ServerParts], fields: dict[str, Any], code: Any
) -> None:
    stub, _ = grpc_stub
    with pytest.raises(grpc.aio.AioRpcError) as unary:
        await stub.Generate(request(**fields))
    assert unary.value.code() == code
    with pytest.raises(grpc.aio.AioRpcError) as streamed:
        async for _ in stub.GenerateStream(request(**fields)):
            pass
    assert streamed.value.code() == code


async def test_an_empty_conversation_is_invalid(grpc_stub: tuple[Any, ServerParts]) -> None:
    stub, _ = grpc_stub
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Generate(serving_pb2.GenerateRequest(model="smollm2"))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "messages" in info.value.details()


async def test_a_busy_model_is_resource_exhausted_with_retry_after(
    grpc_stub: tuple[Any, ServerParts],
) -> None:
    stub, parts = grpc_stub
    call = stub.GenerateStream(request("Tell a long story.", max_tokens=64))
    first = await call.read()  # the model is now busy, and its queue holds no one
    assert first.text
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Generate(request())
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert dict(info.value.trailing_metadata())["retry-after"] == "1"
    call.cancel()
    for _ in range(500):  # cancelling the call stops generation and frees the model
        if parts.manager.states()[0].running == 0:
            break
        await asyncio.sleep(0.01)
    assert parts.manager.states()[0].running == 0
    assert (await stub.Generate(request(max_tokens=2))).usage.completion_tokens <= 2


async def test_cancelling_a_stream_stops_llama_cpp_early(
    grpc_stub: tuple[Any, ServerParts], smollm2: LlamaCppChatModel
) -> None:
    stub, parts = grpc_stub
    await stub.Generate(request("Tell a long story.", max_tokens=1))
    before = smollm2.stats()["tokens_generated_total"]
    call = stub.GenerateStream(request("Tell a long story.", max_tokens=64))
    for _ in range(3):
        await call.read()
    call.cancel()
    for _ in range(2000):
        if parts.manager.states()[0].running == 0 and smollm2.stats()["batch_size"] == 0:
            break
        await asyncio.sleep(0.01)
    generated = smollm2.stats()["tokens_generated_total"] - before
    assert 1 <= generated < 40  # a few tokens, not the 64 the request allowed


def test_http_statuses_map_to_grpc_codes() -> None:
    assert status_code_for(429) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert status_code_for(503) == grpc.StatusCode.UNAVAILABLE
    assert status_code_for(418) == grpc.StatusCode.INTERNAL


async def test_draining_is_unavailable(grpc_stub: tuple[Any, ServerParts]) -> None:
    stub, parts = grpc_stub
    parts.manager.begin_drain()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Generate(request())
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
