"""The Anthropic-compatible ingress: /v1/messages in, the shared pipeline, Anthropic answers out."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from genai_factory.gateway import anthropic_format
from genai_factory.gateway.testing import Fault, ScriptedUpstream
from genai_factory.gateway.testing.hosted import AnthropicUpstream
from genai_factory.shared.errors import ValidationError

from .conftest import GatewayFactory, deployment, fast_timeouts, settings_for

MESSAGE = {
    "model": "m",
    "max_tokens": 64,
    "messages": [{"role": "user", "content": "Hi"}],
}


def events(text: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    name = ""
    for line in text.splitlines():
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            out.append((name, orjson.loads(line[6:])))
    return out


async def test_a_message_in_anthropic_shape(
    upstream: ScriptedUpstream, gateway_client: GatewayFactory
) -> None:
    _, client = await gateway_client(settings_for(deployment("a", "m", upstream)))
    request = MESSAGE | {
        "system": [{"type": "text", "text": "Be kind."}],
        "temperature": 0.3,
        "stop_sequences": ["END"],
        "metadata": {"user_id": "u-1"},
    }
    response = await client.post("/v1/messages", json=request)
    assert response.status_code == 200
    body = response.json()
    assert body["type"] == "message" and body["id"].startswith("msg_")
    assert body["content"] == [{"type": "text", "text": "Hello from primary"}]
    assert body["stop_reason"] == "end_turn"
    assert body["usage"]["output_tokens"] == 3
    sent = upstream.requests[0]
    assert sent["messages"][0] == {"role": "system", "content": "Be kind."}
    assert (sent["max_tokens"], sent["stop"], sent["user"]) == (64, ["END"], "u-1")


async def test_tools_tool_results_and_images_translate(
    upstream: ScriptedUpstream, gateway_client: GatewayFactory
) -> None:
    _, client = await gateway_client(
        settings_for(deployment("a", "m", upstream, supports_vision=True))
    )
    request = {
        "model": "m",
        "max_tokens": 64,
        "tools": [
            {
                "name": "get_weather",
                "description": "weather",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
            }
        ],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"},
                    },
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hmm"},
                    {
                        "type": "tool_use",
                        "id": "toolu_1",
                        "name": "get_weather",
                        "input": {"city": "Oslo"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "rainy"},
                    {"type": "text", "text": "And now?"},
                ],
            },
        ],
    }
    response = await client.post("/v1/messages", json=request)
    assert response.status_code == 200, response.text
    block = response.json()["content"][0]
    assert block["type"] == "tool_use" and block["input"] == {"city": "Paris"}
    assert response.json()["stop_reason"] == "tool_use"
    sent = upstream.requests[0]
    assert sent["tool_choice"] == "required" and sent["parallel_tool_calls"] is False
    assert sent["tools"][0]["function"]["name"] == "get_weather"
    roles = [m["role"] for m in sent["messages"]]
    assert roles == ["user", "assistant", "tool", "user"]
    assert sent["messages"][0]["content"][1]["image_url"]["url"] == "data:image/png;base64,iVBOR"
    assert sent["messages"][1]["tool_calls"][0]["function"]["arguments"] == '{"city":"Oslo"}'
    assert sent["messages"][2] == {"role": "tool", "tool_call_id": "toolu_1", "content": "rainy"}


async def test_a_streamed_message_is_a_complete_anthropic_event_sequence(
    upstream: ScriptedUpstream, gateway_client: GatewayFactory
) -> None:
    _, client = await gateway_client(settings_for(deployment("a", "m", upstream)))
    response = await client.post("/v1/messages", json=MESSAGE | {"stream": True})
    seen = events(response.text)
    names = [name for name, _ in seen]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert names.count("content_block_start") == names.count("content_block_stop") == 1
    text = "".join(d["delta"]["text"] for n, d in seen if n == "content_block_delta")
    assert text == "Hello from primary"
    delta = seen[-2][1]
    assert delta["delta"]["stop_reason"] == "end_turn" and delta["usage"]["output_tokens"] == 3


async def test_a_streamed_tool_call_becomes_a_tool_use_block(
    upstream: ScriptedUpstream, gateway_client: GatewayFactory
) -> None:
    _, client = await gateway_client(settings_for(deployment("a", "m", upstream)))
    request = MESSAGE | {
        "stream": True,
        "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "tool", "name": "get_weather"},
    }
    seen = events((await client.post("/v1/messages", json=request)).text)
    start = next(d for n, d in seen if n == "content_block_start")
    assert start["content_block"]["type"] == "tool_use"
    partial = "".join(d["delta"]["partial_json"] for n, d in seen if n == "content_block_delta")
    assert orjson.loads(partial) == {"city": "Paris"}
    assert seen[-2][1]["delta"]["stop_reason"] == "tool_use"


async def test_a_stream_failing_after_the_first_token_ends_with_an_error_event(
    upstream: ScriptedUpstream, gateway_client: GatewayFactory
) -> None:
    upstream.default = Fault.ok("one two three", cut_after=1)
    _, client = await gateway_client(settings_for(deployment("a", "m", upstream)))
    seen = events((await client.post("/v1/messages", json=MESSAGE | {"stream": True})).text)
    assert seen[-1][0] == "error" and seen[-1][1]["type"] == "error"
    assert seen[-1][1]["error"]["type"] == "api_error"
    assert "message_stop" not in [name for name, _ in seen]


@pytest.mark.parametrize(
    ("body", "status", "kind"),
    [
        (MESSAGE | {"max_tokens": 0}, 400, "invalid_request_error"),
        (
            {"model": "m", "messages": [{"role": "user", "content": "x"}]},
            400,
            "invalid_request_error",
        ),
        (
            MESSAGE | {"messages": [{"role": "system", "content": "x"}]},
            400,
            "invalid_request_error",
        ),
        (
            MESSAGE | {"messages": [{"role": "user", "content": [{"type": "video"}]}]},
            400,
            "invalid_request_error",
        ),
        (MESSAGE | {"tool_choice": {"type": "sometimes"}}, 400, "invalid_request_error"),
        (MESSAGE | {"model": "nope"}, 404, "not_found_error"),
        (
            MESSAGE | {"messages": [{"role": "user", "content": "x" * 5000}]},
            413,
            "request_too_large",
        ),
    ],
)
async def test_errors_come_in_anthropic_shape(
    upstream: ScriptedUpstream,
    gateway_client: GatewayFactory,
    body: dict[str, Any],
    status: int,
    kind: str,
) -> None:
    _, client = await gateway_client(
        settings_for(deployment("a", "m", upstream), max_body_bytes=4096)
    )
    response = await client.post("/v1/messages", json=body)
    assert response.status_code == status
    error = response.json()
    assert error["type"] == "error" and error["error"]["type"] == kind
    assert error["error"]["message"]


async def test_upstream_rate_limits_come_back_as_rate_limit_error(
    upstream: ScriptedUpstream, gateway_client: GatewayFactory
) -> None:
    upstream.default = Fault.error(429, "slow", retry_after=90)
    _, client = await gateway_client(settings_for(deployment("a", "m", upstream)))
    response = await client.post("/v1/messages", json=MESSAGE)
    assert response.status_code == 429
    assert response.json()["error"]["type"] == "rate_limit_error"
    assert response.headers["retry-after"] == "90"


async def test_anthropic_in_anthropic_out_through_the_native_provider(
    gateway_client: GatewayFactory,
) -> None:
    async with AnthropicUpstream() as server:
        settings = settings_for(
            {
                "name": "claude",
                "model": "m",
                "provider": "anthropic",
                "upstream_model": "claude-test",
                "api_key": server.api_key,
                "base_url": server.url,
                "timeouts": fast_timeouts(),
            }
        )
        _, client = await gateway_client(settings)
        request = MESSAGE | {"system": "Be brief.", "top_k": 5}
        response = await client.post("/v1/messages", json=request)
        assert response.json()["content"][0]["text"] == "Hello from anthropic"
        sent = server.requests[0]
        assert (sent["system"], sent["top_k"], sent["model"]) == ("Be brief.", 5, "claude-test")
        streamed = events((await client.post("/v1/messages", json=request | {"stream": True})).text)
        assert (
            "".join(d["delta"].get("text", "") for n, d in streamed if n == "content_block_delta")
            == "Hello from anthropic"
        )


def test_translation_keeps_what_it_can_and_refuses_what_it_cannot() -> None:
    chat = anthropic_format.request_to_chat(
        MESSAGE
        | {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}
                    ],
                },
                {"role": "assistant", "content": "ok"},
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "t",
                            "content": [{"type": "text", "text": "42"}],
                        }
                    ],
                },
            ],
            "tool_choice": {"type": "none"},
            "tools": [{"name": "t"}],
        }
    )
    assert chat.messages[0].content[0].image_url.url == "https://x/y.png"  # type: ignore[index, union-attr]
    assert chat.messages[2].tool_call_id == "t" and chat.messages[2].text() == "42"
    assert chat.tool_choice == "none"
    with pytest.raises(ValidationError):
        anthropic_format.request_to_chat(MESSAGE | {"system": [{"type": "image"}]})
    with pytest.raises(ValidationError):
        anthropic_format.request_to_chat(
            MESSAGE | {"messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]}
        )
    body = anthropic_format.chat_to_request(chat, "claude")
    assert body["messages"][0]["content"][0]["source"] == {"type": "url", "url": "https://x/y.png"}
    assert body["tool_choice"] == {"type": "none"}
