"""The gateway in front of a real upstream: llama.cpp's OpenAI-compatible server with SmolLM2."""

from __future__ import annotations

import importlib.util

import httpx
import orjson
import pytest

from genai_factory.gateway.config import GatewaySettings

from .conftest import GatewayFactory
from .test_api import sse_events

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ASK = {
    "model": "smollm2",
    "temperature": 0,
    "max_tokens": 8,
    "messages": [{"role": "user", "content": "What is the capital of France?"}],
}


@pytest.fixture
async def client(llama_server: str, gateway_client: GatewayFactory) -> httpx.AsyncClient:
    settings = GatewaySettings.model_validate(
        {
            "deployments": [
                {
                    "name": "local",
                    "model": "smollm2",
                    "base_url": llama_server,
                    "context_window": 2048,
                }
            ],
            "auth": {"keys_env": None},
        }
    )
    _, http = await gateway_client(settings)
    return http


async def test_a_chat_answer_with_usage(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/chat/completions", json=ASK)
    assert response.status_code == 200
    body = response.json()
    assert body["choices"][0]["message"]["content"].strip()
    assert 0 < body["usage"]["completion_tokens"] <= 8
    # temperature 0, no tools: the second identical request is a cache hit
    again = await client.post("/v1/chat/completions", json=ASK)
    assert again.headers["x-gf-cache"] == "hit"
    assert again.json()["choices"][0]["message"] == body["choices"][0]["message"]


async def test_a_streamed_answer_ends_with_done(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/chat/completions", json=ASK | {"stream": True, "temperature": 0.1}
    )
    events = sse_events(response.content)
    assert events[-1] == "[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text.strip()
    assert any(c["choices"] and c["choices"][0].get("finish_reason") for c in chunks)


async def test_json_mode_gives_json(client: httpx.AsyncClient) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    }
    request = ASK | {
        "max_tokens": 24,
        "response_format": {"type": "json_object", "schema": schema},
    }
    response = await client.post("/v1/chat/completions", json=request)
    assert response.status_code == 200
    answer = orjson.loads(response.json()["choices"][0]["message"]["content"])
    assert isinstance(answer["city"], str)


async def test_a_forced_tool_call(client: httpx.AsyncClient) -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
    request = ASK | {
        "max_tokens": 32,
        "tools": [tool],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    }
    response = await client.post("/v1/chat/completions", json=request)
    assert response.status_code == 200
    call = response.json()["choices"][0]["message"]["tool_calls"][0]
    assert call["function"]["name"] == "get_weather"
    assert "city" in orjson.loads(call["function"]["arguments"])


async def test_anthropic_clients_reach_the_same_model(client: httpx.AsyncClient) -> None:
    request = {
        "model": "smollm2",
        "max_tokens": 8,
        "temperature": 0,
        "system": "Answer briefly.",
        "messages": [{"role": "user", "content": "Name a colour."}],
    }
    response = await client.post("/v1/messages", json=request)
    assert response.status_code == 200
    body = response.json()
    assert body["type"] == "message" and body["role"] == "assistant"
    assert body["content"][0]["type"] == "text" and body["content"][0]["text"].strip()
    assert body["stop_reason"] in ("end_turn", "max_tokens")
    streamed = await client.post(
        "/v1/messages", json=request | {"stream": True, "temperature": 0.2}
    )
    names = [line[7:] for line in streamed.text.splitlines() if line.startswith("event: ")]
    assert names[0] == "message_start" and names[-1] == "message_stop"
    assert "content_block_delta" in names and "message_delta" in names


async def test_legacy_completions(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/completions", json={"model": "smollm2", "prompt": "The sky is", "max_tokens": 6}
    )
    assert response.status_code == 200
    assert response.json()["choices"][0]["text"]
    streamed = await client.post(
        "/v1/completions",
        json={"model": "smollm2", "prompt": "The sky is", "max_tokens": 6, "stream": True},
    )
    assert streamed.status_code == 200
    events = sse_events(streamed.content)
    assert events[-1] == "[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    assert all(c["object"] == "text_completion" for c in chunks)
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]).strip()
    assert any(c["choices"] and c["choices"][0]["finish_reason"] for c in chunks)


@pytest.mark.skipif(importlib.util.find_spec("litellm") is None, reason="litellm is not installed")
async def test_the_litellm_adapter_against_the_real_server(
    llama_server: str, gateway_client: GatewayFactory
) -> None:
    settings = GatewaySettings.model_validate(
        {
            "deployments": [
                {
                    "name": "via-litellm",
                    "model": "smollm2",
                    "provider": "litellm",
                    "upstream_model": "openai/smollm2",
                    "base_url": llama_server,
                    "api_key": "unused",
                    "timeouts": {"ttft_s": 120, "total_s": 120},
                }
            ],
            "auth": {"keys_env": None},
            "cache": {"enabled": False},
        }
    )
    _, client = await gateway_client(settings)
    response = await client.post("/v1/chat/completions", json=ASK)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["choices"][0]["message"]["content"].strip()
    assert 0 < body["usage"]["completion_tokens"] <= 8
    streamed = await client.post("/v1/chat/completions", json=ASK | {"stream": True})
    events = sse_events(streamed.content)
    assert events[-1] == "[DONE]"
    text = "".join(
        orjson.loads(e)["choices"][0]["delta"].get("content") or ""
        for e in events[:-1]
        if orjson.loads(e)["choices"]
    )
    assert text.strip()
    too_long = ASK | {"messages": [{"role": "user", "content": "word " * 4000}]}
    refused = await client.post("/v1/chat/completions", json=too_long)
    assert refused.status_code == 400  # llama.cpp's context-length error, through litellm
    assert refused.json()["error"]["code"] == "context_length_exceeded"
