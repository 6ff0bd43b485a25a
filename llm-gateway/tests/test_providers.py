"""Anthropic, Bedrock and Gemini adapters against servers that speak each provider's wire format.

The same gateway requests go through each provider; the test servers check the requests (keys,
headers, SigV4 signatures, body shapes) and answer with documented responses, streams and errors.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from genai_factory.gateway.providers import anthropic, bedrock, gemini, openai
from genai_factory.gateway.testing import Fault
from genai_factory.gateway.testing.hosted import AnthropicUpstream, BedrockUpstream, GeminiUpstream

from .conftest import GatewayFactory, fast_timeouts, settings_for
from .test_api import CHAT, sse_events

pytestmark = pytest.mark.integration

BEDROCK_MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def provider_deployment(kind: str, server: Any, **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": kind,
        "model": "m",
        "provider": kind,
        "base_url": server.url,
        "timeouts": fast_timeouts(),
    }
    if kind == "anthropic":
        base |= {"upstream_model": "claude-test", "api_key": server.api_key}
    elif kind == "bedrock":
        base |= {
            "upstream_model": BEDROCK_MODEL,
            "region": server.region,
            "aws_access_key_id": server.access_key_id,
            "aws_secret_access_key": server.secret_access_key,
        }
    else:
        base |= {"upstream_model": "gemini-test", "api_key": server.api_key}
    return base | extra


@pytest.fixture(params=["anthropic", "bedrock", "gemini"])
async def hosted(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, Any]]:
    server: Any = {
        "anthropic": AnthropicUpstream,
        "bedrock": BedrockUpstream,
        "gemini": GeminiUpstream,
    }[request.param]()
    async with server:
        yield request.param, server


async def test_a_plain_answer_with_usage(
    hosted: tuple[str, Any], gateway_client: GatewayFactory
) -> None:
    kind, server = hosted
    _, client = await gateway_client(settings_for(provider_deployment(kind, server)))
    request = CHAT | {
        "messages": [{"role": "system", "content": "Be brief."}, *CHAT["messages"]],
        "max_tokens": 50,
        "temperature": 0.5,
        "stop": ["\n\n"],
    }
    response = await client.post("/v1/chat/completions", json=request)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["choices"][0]["message"]["content"] == f"Hello from {kind}"
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["completion_tokens"] == 3 and body["usage"]["prompt_tokens"] > 0
    sent = server.requests[0]
    if kind == "anthropic":
        assert sent["system"] == "Be brief." and sent["max_tokens"] == 50
        assert sent["stop_sequences"] == ["\n\n"]
        assert server.headers[0]["anthropic-version"] == "2023-06-01"
    elif kind == "bedrock":
        assert sent["system"] == [{"text": "Be brief."}]
        assert sent["inferenceConfig"]["maxTokens"] == 50
        assert server.models == [BEDROCK_MODEL]  # the ':' survived SigV4's double encoding
    else:
        assert sent["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
        assert sent["generationConfig"]["maxOutputTokens"] == 50


async def test_a_forced_tool_call_round_trips(
    hosted: tuple[str, Any], gateway_client: GatewayFactory
) -> None:
    kind, server = hosted
    _, client = await gateway_client(settings_for(provider_deployment(kind, server)))
    request = CHAT | {
        "tools": [TOOL],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    }
    response = await client.post("/v1/chat/completions", json=request)
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    call = choice["message"]["tool_calls"][0]
    assert call["function"]["name"] == "get_weather"
    assert orjson.loads(call["function"]["arguments"]) == {"city": "Paris"}
    assert choice["finish_reason"] == "tool_calls"
    # the tool's answer goes back as the provider's own tool-result shape
    follow_up = CHAT | {
        "messages": [
            *CHAT["messages"],
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call["id"], "content": "sunny"},
        ],
        "tools": [TOOL],
    }
    answer = await client.post("/v1/chat/completions", json=follow_up)
    assert answer.status_code == 200, answer.text
    turns = str(server.requests[-1])
    assert "sunny" in turns and "get_weather" in turns
    streamed = await client.post("/v1/chat/completions", json=request | {"stream": True})
    events = sse_events(streamed.content)
    assert events[-1] == "[DONE]"
    arguments = "".join(
        call["function"].get("arguments", "")
        for e in events[:-1]
        for choice in orjson.loads(e)["choices"]
        for call in choice["delta"].get("tool_calls") or ()
    )
    assert orjson.loads(arguments) == {"city": "Paris"}


async def test_a_streamed_answer(hosted: tuple[str, Any], gateway_client: GatewayFactory) -> None:
    kind, server = hosted
    _, client = await gateway_client(settings_for(provider_deployment(kind, server)))
    response = await client.post("/v1/chat/completions", json=CHAT | {"stream": True})
    events = sse_events(response.content)
    assert events[-1] == "[DONE]", events
    chunks = [orjson.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == f"Hello from {kind}"
    assert any(c.get("usage") for c in chunks)


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        (Fault.ok(cut_after=1), "upstream_connection"),
        (Fault.ok(malformed_at=1), "malformed_response"),
        (Fault.ok(done=False, finish=False), "stream_truncated"),
    ],
    ids=["cut", "malformed", "truncated"],
)
async def test_a_broken_stream_ends_with_an_error_event(
    hosted: tuple[str, Any], gateway_client: GatewayFactory, fault: Fault, code: str
) -> None:
    kind, server = hosted
    server.default = fault
    _, client = await gateway_client(settings_for(provider_deployment(kind, server)))
    response = await client.post("/v1/chat/completions", json=CHAT | {"stream": True})
    events = sse_events(response.content)
    assert "[DONE]" not in events
    assert orjson.loads(events[-1])["error"]["code"] == code


@pytest.mark.parametrize(
    ("status", "retried"), [(429, True), (500, True), (503, True), (400, False)]
)
async def test_provider_errors_are_classified(
    hosted: tuple[str, Any], gateway_client: GatewayFactory, status: int, retried: bool
) -> None:
    kind, server = hosted
    server.push(Fault.error(status, f"provider says {status}"))
    _, client = await gateway_client(settings_for(provider_deployment(kind, server)))
    response = await client.post("/v1/chat/completions", json=CHAT)
    if retried:
        assert response.status_code == 200 and server.served == 2
    else:
        assert response.status_code == 400 and server.served == 1
        assert f"provider says {status}" in response.json()["error"]["message"]


async def test_wrong_credentials_are_refused_by_the_provider(
    hosted: tuple[str, Any], gateway_client: GatewayFactory
) -> None:
    kind, server = hosted
    wrong = (
        {"aws_secret_access_key": "not-the-secret"}
        if kind == "bedrock"
        else {"api_key": "wrong-key"}
    )
    _, client = await gateway_client(settings_for(provider_deployment(kind, server, **wrong)))
    response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code in (400, 502)
    message = response.json()["error"]["message"]
    expected = {
        "anthropic": "invalid x-api-key",
        "bedrock": "signature does not match",
        "gemini": "API key not valid",
    }[kind]
    assert expected in message
    assert server.served == 0


async def test_anthropic_overloaded_529_is_retried(gateway_client: GatewayFactory) -> None:
    async with AnthropicUpstream() as server:
        server.push(Fault.error(529, "Overloaded"))
        _, client = await gateway_client(settings_for(provider_deployment("anthropic", server)))
        response = await client.post("/v1/chat/completions", json=CHAT)
        assert response.status_code == 200 and server.served == 2


async def test_anthropic_json_mode_is_an_instruction(gateway_client: GatewayFactory) -> None:
    async with AnthropicUpstream() as server:
        _, client = await gateway_client(settings_for(provider_deployment("anthropic", server)))
        schema = {"type": "object", "properties": {"city": {"type": "string"}}}
        request = CHAT | {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": schema},
            }
        }
        assert (await client.post("/v1/chat/completions", json=request)).status_code == 200
        assert '"city"' in server.requests[0]["system"]


async def test_gemini_safety_blocks_use_the_content_policy_fallback(
    gateway_client: GatewayFactory,
) -> None:
    async with GeminiUpstream() as strict, AnthropicUpstream() as lenient:
        strict.default = Fault.ok(finish_reason="content_filter")
        settings = settings_for(
            provider_deployment("gemini", strict),
            provider_deployment("anthropic", lenient, model="m-lenient"),
            models=[{"name": "m", "content_policy_fallbacks": ["m-lenient"]}],
        )
        _, client = await gateway_client(settings)
        response = await client.post(
            "/v1/chat/completions", json=CHAT | {"response_format": {"type": "json_object"}}
        )
        assert response.status_code == 200
        assert response.headers["x-gf-deployment"] == "anthropic"
        assert strict.requests[0]["generationConfig"]["responseMimeType"] == "application/json"


async def test_bedrock_in_stream_exceptions_are_provider_errors(
    gateway_client: GatewayFactory,
) -> None:
    async with BedrockUpstream() as server:
        server.default = Fault(kind="ok", status=429, done=False)
        _, client = await gateway_client(settings_for(provider_deployment("bedrock", server)))
        response = await client.post("/v1/chat/completions", json=CHAT | {"stream": True})
        events = sse_events(response.content)
        assert "[DONE]" not in events
        assert "slow down" in orjson.loads(events[-1])["error"]["message"]


async def test_hosted_servers_reject_what_their_providers_reject() -> None:
    import httpx

    async with (
        AnthropicUpstream() as anthropic,
        GeminiUpstream() as gemini,
        BedrockUpstream() as bedrock,
        httpx.AsyncClient() as http,
    ):
        no_version = await http.post(
            anthropic.url + "/v1/messages",
            json={
                "model": "x",
                "max_tokens": 1,
                "messages": [{"role": "user", "content": "hi"}],
            },
            headers={"x-api-key": anthropic.api_key},
        )
        assert no_version.status_code == 400
        assert no_version.json()["error"]["type"] == "invalid_request_error"
        bad_role = await http.post(
            gemini.url + "/v1beta/models/g:generateContent",
            json={"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]},
            headers={"x-goog-api-key": gemini.api_key},
        )
        assert (
            bad_role.status_code == 400 and bad_role.json()["error"]["status"] == "INVALID_ARGUMENT"
        )
        unsigned = await http.post(bedrock.url + "/model/x/converse", json={"messages": []})
        assert unsigned.status_code == 403
        assert unsigned.headers["x-amzn-errortype"].startswith("AccessDeniedException")


def test_every_adapter_keeps_its_settings_for_dump_component() -> None:
    from genai_factory.shared.factory import dump_component

    adapters = [
        anthropic.AnthropicProvider("claude", "k"),
        bedrock.BedrockConverseProvider(
            "m", region="eu-west-1", access_key_id="a", secret_access_key="s"
        ),
        gemini.GeminiProvider("g", "k"),
        openai.OpenAICompatibleProvider("http://x/v1", "m", "k", extra_headers={"h": "v"}),
    ]
    for adapter in adapters:
        params = dump_component(adapter)["params"]
        assert params["model"] in ("claude", "m", "g")
    assert (
        bedrock.BedrockConverseProvider(
            "m", region="eu-west-1", access_key_id="a", secret_access_key="s"
        ).url
        == "https://bedrock-runtime.eu-west-1.amazonaws.com/model/m/converse"
    )
