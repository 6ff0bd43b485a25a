"""The OpenAI-compatible REST API in process, over the real packaged SmolLM2 and MiniLM."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np
import pytest

from genai_factory.serving.server import ServerParts, create_app
from genai_factory.serving.testing import sse_payloads

pytestmark = pytest.mark.integration


def chat_body(prompt: str = "Say hello.", **extra: Any) -> dict[str, Any]:
    return {
        "model": "smollm2",
        "messages": [{"role": "user", "content": prompt}],
        "temperature": 0,
        "max_tokens": 8,
        **extra,
    }


def openai_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


async def test_chat_completion_json(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/chat/completions", json=chat_body("What is 2 + 2?"))
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion" and body["model"] == "smollm2"
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert body["choices"][0]["message"]["content"].strip()
    assert body["choices"][0]["finish_reason"] in {"stop", "length"}
    assert 0 < body["usage"]["completion_tokens"] <= 8
    assert body["usage"]["total_tokens"] == (
        body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    )


async def test_streaming_sends_chunks_usage_and_done(client: httpx.AsyncClient) -> None:
    # compare answers that both start from llama.cpp's cached prompt (a fresh evaluation can
    # pick a different greedy token)
    await client.post("/v1/chat/completions", json=chat_body("Name a fruit."))
    plain = (await client.post("/v1/chat/completions", json=chat_body("Name a fruit."))).json()
    response = await client.post(
        "/v1/chat/completions",
        json=chat_body("Name a fruit.", stream=True, stream_options={"include_usage": True}),
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_payloads(response.text)
    assert events[-1] == "[DONE]"
    chunks, usage_chunk = events[:-2], events[-2]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == plain["choices"][0]["message"]["content"]
    assert chunks[-1]["choices"][0]["finish_reason"] in {"stop", "length"}
    # the usage chunk has no choices and the same counts as the non-streamed answer
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == plain["usage"]


async def test_streaming_without_include_usage_sends_no_usage(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/v1/chat/completions", json=chat_body(stream=True))
    events = sse_payloads(response.text)
    assert events[-1] == "[DONE]"
    assert all("usage" not in e and e["choices"] for e in events[:-1])


async def test_a_forced_tool_call_comes_back_as_tool_calls(client: httpx.AsyncClient) -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
    body = chat_body(
        "What is the weather in Paris?",
        max_tokens=40,
        tools=[tool],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    response = await client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    call = response.json()["choices"][0]["message"]["tool_calls"][0]
    assert call["function"]["name"] == "get_weather"
    assert isinstance(json.loads(call["function"]["arguments"])["city"], str)


async def test_a_conversation_with_tool_results_is_answered(client: httpx.AsyncClient) -> None:
    call = {"id": "call_1", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}}
    messages = [
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 20 C"},
    ]
    response = await client.post("/v1/chat/completions", json=chat_body(messages=messages))
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"]


async def test_response_format_json_schema_gives_json(client: httpx.AsyncClient) -> None:
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "integer"}},
        "required": ["answer"],
    }
    body = chat_body(
        "What is 3 + 4? Reply in JSON.",
        max_tokens=20,
        response_format={"type": "json_schema", "json_schema": {"name": "sum", "schema": schema}},
    )
    response = await client.post("/v1/chat/completions", json=body)
    assert isinstance(
        json.loads(response.json()["choices"][0]["message"]["content"])["answer"], int
    )


async def test_text_content_parts_are_read(client: httpx.AsyncClient) -> None:
    parts = [{"type": "text", "text": "Say"}, {"type": "text", "text": " hi."}]
    response = await client.post(
        "/v1/chat/completions", json=chat_body(messages=[{"role": "user", "content": parts}])
    )
    assert response.status_code == 200


async def test_legacy_completions_one_and_many_prompts(client: httpx.AsyncClient) -> None:
    one = await client.post(
        "/v1/completions", json={"model": "smollm2", "prompt": "Say hi.", "max_tokens": 5}
    )
    assert one.status_code == 200
    assert one.json()["object"] == "text_completion"
    assert one.json()["choices"][0]["text"]
    many = await client.post(
        "/v1/completions",
        json={"model": "smollm2", "prompt": ["Say hi.", "Say bye."], "max_tokens": 5},
    )
    choices = many.json()["choices"]
    assert [c["index"] for c in choices] == [0, 1]
    assert many.json()["usage"]["completion_tokens"] <= 10


async def test_legacy_completions_stream(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/completions",
        json={
            "model": "smollm2",
            "prompt": "Count to three.",
            "max_tokens": 6,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    )
    events = sse_payloads(response.text)
    assert events[-1] == "[DONE]"
    assert all(e["object"] == "text_completion" for e in events[:-1])
    assert "".join(c["choices"][0]["text"] for c in events[:-2] if c["choices"])
    assert events[-2]["usage"]["completion_tokens"] <= 6


async def test_embeddings_as_floats_and_base64(client: httpx.AsyncClient) -> None:
    texts = ["A cat sits on the mat.", "A kitten rests on a rug.", "Interest rates rose."]
    floats = await client.post("/v1/embeddings", json={"model": "all-minilm-l6-v2", "input": texts})
    assert floats.status_code == 200
    body = floats.json()
    vectors = np.array([d["embedding"] for d in body["data"]])
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    similarity = vectors @ vectors.T
    assert similarity[0, 1] > similarity[0, 2] + 0.3  # cats are closer to kittens than to rates
    assert body["usage"]["prompt_tokens"] > 10
    encoded = await client.post(
        "/v1/embeddings",
        json={"model": "all-minilm-l6-v2", "input": texts[0], "encoding_format": "base64"},
    )
    decoded = np.frombuffer(base64.b64decode(encoded.json()["data"][0]["embedding"]), "<f4")
    assert np.allclose(decoded, vectors[0], atol=1e-6)


async def test_models_health_ready_and_model_card(client: httpx.AsyncClient) -> None:
    models = (await client.get("/v1/models")).json()
    kinds = {m["id"]: m["kind"] for m in models["data"]}
    assert kinds == {"smollm2": "chat", "all-minilm-l6-v2": "embedding"}
    assert (await client.get("/v1/models/smollm2")).json()["loaded"] is True
    openai_error(await client.get("/v1/models/gpt-9"), 404)
    openai_error(await client.get("/v1/models/org/gpt-9"), 404)  # ids may hold a slash
    assert (await client.get("/health")).json() == {"status": "ok"}
    ready = await client.get("/ready")
    assert ready.status_code == 200 and ready.json()["models"] == {"smollm2": True}


async def test_ready_is_503_until_started_and_while_draining(
    make_parts: Callable[..., ServerParts],
) -> None:
    parts = make_parts()
    transport = httpx.ASGITransport(app=create_app(parts=parts))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        before = await http.get("/ready")
        assert openai_error(before, 503)["code"] == "not_ready"
        assert before.headers["retry-after"] == "1"
        refused = await http.post("/v1/chat/completions", json=chat_body())
        assert openai_error(refused, 503)["code"] == "not_ready"
        await parts.start()
        assert (await http.get("/ready")).status_code == 200
        parts.manager.begin_drain()
        assert openai_error(await http.get("/ready"), 503)["message"] == "not ready: draining"
        drained = await http.post("/v1/chat/completions", json=chat_body())
        assert openai_error(drained, 503)["code"] == "draining"
        assert (await http.get("/health")).status_code == 200


async def test_metrics_after_traffic(client: httpx.AsyncClient) -> None:
    await client.post("/v1/chat/completions", json=chat_body(stream=True, max_tokens=6))
    await client.post("/v1/chat/completions", json=chat_body(model="nope"))
    response = await client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    for name in (
        "gf_serving_queue_depth",
        "gf_serving_running_requests",
        "gf_serving_batch_size",
        "gf_serving_kv_blocks_used",
        "gf_serving_prefix_cache_hit_rate",
        "gf_serving_time_to_first_token_seconds_bucket",
        "gf_serving_time_per_output_token_seconds_bucket",
    ):
        assert name in text, name
    assert 'gf_serving_requests_total{endpoint="chat",model="smollm2",status="200"} 1.0' in text
    assert 'gf_serving_requests_total{endpoint="chat",model="unknown",status="404"} 1.0' in text
    assert 'gf_serving_time_to_first_token_seconds_count{model="smollm2"} 1.0' in text
    assert 'gf_serving_model_loaded{model="smollm2"} 1.0' in text
    assert 'gf_serving_engine_stat{model="smollm2",stat="tokens_generated_total"}' in text


# ---------------------------------------------------------------------------------------------
# client mistakes: 4xx with OpenAI's error body, never 5xx

TOOL_WITH_BAD_SCHEMA = {
    "type": "function",
    "function": {"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": 5}}}},
}


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        (b"{not json", 400, None),
        (b"[1, 2]", 400, None),
        (json.dumps({"model": 3, "messages": []}).encode(), 400, "model"),
        (json.dumps({"model": "smollm2"}).encode(), 400, "messages"),
        (json.dumps(chat_body(model="gpt-9")).encode(), 404, "model"),
        (json.dumps(chat_body(max_tokens=-1)).encode(), 400, "max_tokens"),
        (json.dumps(chat_body(max_tokens=100_000)).encode(), 400, "max_tokens"),
        (json.dumps(chat_body(temperature="hot")).encode(), 400, "temperature"),
        (json.dumps(chat_body(n=2)).encode(), 400, "n"),
        (json.dumps(chat_body(logprobs=True)).encode(), 400, "logprobs"),
        (
            json.dumps(chat_body(tools=[TOOL_WITH_BAD_SCHEMA])).encode(),
            400,
            "tools.0.function.parameters",
        ),
        (json.dumps(chat_body(tools=[{"type": "function"}])).encode(), 400, "tools.0.function"),
        (json.dumps(chat_body("word " * 3000)).encode(), 400, "messages"),
        (
            json.dumps(
                chat_body(
                    messages=[
                        {
                            "role": "user",
                            "content": [
                                {"type": "image_url", "image_url": {"url": "http://x/y.png"}}
                            ],
                        }
                    ]
                )
            ).encode(),
            400,
            "messages.0.content.0",
        ),
    ],
    ids=[
        "malformed-json",
        "not-an-object",
        "wrong-type",
        "missing-messages",
        "unknown-model",
        "negative-max-tokens",
        "max-tokens-over-the-cap",
        "temperature-not-a-number",
        "n-over-1",
        "logprobs",
        "tool-schema-invalid",
        "tool-without-function",
        "context-overflow",
        "image-content",
    ],
)
async def test_chat_client_mistakes_are_4xx(
    client: httpx.AsyncClient, body: bytes, status: int, param: str | None
) -> None:
    for stream in (False, True):
        content = body
        if stream and body.startswith(b"{") and b'"messages"' in body:
            content = json.dumps({**json.loads(body), "stream": True}).encode()
        response = await client.post(
            "/v1/chat/completions", content=content, headers={"content-type": "application/json"}
        )
        error = openai_error(response, status)
        assert error["param"] == param, error


async def test_context_overflow_has_its_code(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/chat/completions", json=chat_body("word " * 3000))
    assert openai_error(response, 400)["code"] == "context_length_exceeded"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "smollm2", "prompt": "x", "max_tokens": 0}, "max_tokens"),
        ({"model": "smollm2", "prompt": []}, "prompt"),
        ({"model": "smollm2", "prompt": ["x"] * 17}, "prompt"),
        ({"model": "smollm2", "prompt": ["a", "b"], "stream": True}, "prompt"),
        ({"model": "smollm2", "prompt": "x", "echo": True}, "echo"),
        ({"model": "smollm2", "prompt": "x", "best_of": 3}, "best_of"),
        ({"model": "smollm2", "prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        (
            {"model": "smollm2", "prompt": "x", "stream_options": {"include_usage": "x"}},
            "include_usage",
        ),
    ],
)
async def test_completions_client_mistakes_are_400(
    client: httpx.AsyncClient, body: dict[str, Any], param: str
) -> None:
    error = openai_error(await client.post("/v1/completions", json=body), 400)
    assert error["param"] == param


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"model": "all-minilm-l6-v2", "input": []}, 400, "input"),
        ({"model": "all-minilm-l6-v2", "input": [1, 2, 3]}, 400, "input"),
        ({"model": "all-minilm-l6-v2", "input": "x", "dimensions": 12}, 400, "dimensions"),
        ({"model": "all-minilm-l6-v2", "input": ["x"] * 300}, 400, "input"),
        (
            {"model": "all-minilm-l6-v2", "input": "x", "encoding_format": "hex"},
            400,
            "encoding_format",
        ),
        ({"model": "smollm2", "input": "x"}, 404, "model"),
    ],
)
async def test_embedding_client_mistakes_are_4xx(
    client: httpx.AsyncClient, body: dict[str, Any], status: int, param: str
) -> None:
    error = openai_error(await client.post("/v1/embeddings", json=body), status)
    assert error["param"] == param


async def test_unknown_routes_and_methods_get_openai_errors(client: httpx.AsyncClient) -> None:
    assert openai_error(await client.get("/v2/nothing"), 404)["code"] == "not_found"
    assert openai_error(await client.put("/health"), 405)["code"] == "http_405"


async def test_bodies_over_the_limit_are_413(make_parts: Callable[..., ServerParts]) -> None:
    parts = make_parts(max_body_bytes=4096)
    await parts.start()
    transport = httpx.ASGITransport(app=create_app(parts=parts))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        big = chat_body("x" * 5000)
        error = openai_error(await http.post("/v1/chat/completions", json=big), 413)
        assert error["code"] == "body_too_large"

        async def chunked() -> Any:  # no Content-Length: counted as it arrives
            for _ in range(5):
                yield b"x" * 1000

        response = await http.post("/v1/chat/completions", content=chunked())
        openai_error(response, 413)
        bad_length = await http.post(
            "/v1/chat/completions", content=b"{}", headers={"content-length": "abc"}
        )
        openai_error(bad_length, 400)
        small = await http.post("/v1/chat/completions", json=chat_body())
        assert small.status_code == 200
