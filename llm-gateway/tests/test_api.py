"""The OpenAI-compatible API over a real (scripted) upstream: answers, streams, headers, errors."""

from __future__ import annotations

import orjson
import pytest

from genai_factory.gateway.testing import Fault, ScriptedUpstream

from .conftest import GatewayFactory, deployment, settings_for

CHAT = {"model": "m", "messages": [{"role": "user", "content": "Hi there"}]}


def sse_events(body: bytes) -> list[str]:
    return [
        line.removeprefix("data: ")
        for line in body.decode().split("\n")
        if line.startswith("data: ")
    ]


async def test_chat_completion_answers_and_every_response_has_gateway_headers(
    upstream: ScriptedUpstream, gateway_client: GatewayFactory
) -> None:
    _, client = await gateway_client(settings_for(deployment("a", "m", upstream)))
    response = await client.post(
        "/v1/chat/completions", json=CHAT, headers={"x-request-id": "req-123"}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["choices"][0]["message"]["content"] == "Hello from primary"
    assert body["usage"]["completion_tokens"] == 3
    assert response.headers["x-request-id"] == "req-123"
    assert float(response.headers["x-gf-overhead-ms"]) >= 0
    assert response.headers["x-gf-deployment"] == "a"
    # the upstream got the deployment's model and the caller's messages
    assert upstream.requests[0]["messages"] == CHAT["messages"]
    for path in ("/v1/models", "/health/liveness", "/nope"):
        other = await client.get(path)
        assert len(other.headers["x-request-id"]) == 32
        assert "x-gf-overhead-ms" in other.headers


async def test_insane_request_ids_are_replaced(
    upstream: ScriptedUpstream, gateway_client: GatewayFactory
) -> None:
    _, client = await gateway_client(settings_for(deployment("a", "m", upstream)))
    response = await client.get("/health/liveness", headers={"x-request-id": "a b\tc" * 50})
    assert response.headers["x-request-id"] != "a b\tc" * 50


async def test_stream_ends_with_done_and_reassembles_the_answer(
    upstream: ScriptedUpstream, gateway_client: GatewayFactory
) -> None:
    _, client = await gateway_client(settings_for(deployment("a", "m", upstream)))
    response = await client.post("/v1/chat/completions", json=CHAT | {"stream": True})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.content)
    assert events[-1] == "[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Hello from primary"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_tools_and_response_format_reach_the_upstream(
    upstream: ScriptedUpstream, gateway_client: GatewayFactory
) -> None:
    _, client = await gateway_client(settings_for(deployment("a", "m", upstream)))
    tool = {
        "type": "function",
        "function": {
            "name": "weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
    request = CHAT | {
        "tools": [tool],
        "tool_choice": {"type": "function", "function": {"name": "weather"}},
        "response_format": {"type": "json_object"},
        "vendor_option": 7,
    }
    response = await client.post("/v1/chat/completions", json=request)
    assert response.status_code == 200
    call = response.json()["choices"][0]["message"]["tool_calls"][0]
    assert call["function"]["name"] == "weather"
    sent = upstream.requests[0]
    assert sent["tools"] == [tool]
    assert sent["response_format"] == {"type": "json_object"}
    assert sent["vendor_option"] == 7  # unknown fields are forwarded
    streamed = await client.post("/v1/chat/completions", json=request | {"stream": True})
    assert '"tool_calls"' in streamed.text and sse_events(streamed.content)[-1] == "[DONE]"


async def test_completions_embeddings_and_models(
    upstream: ScriptedUpstream, gateway_client: GatewayFactory
) -> None:
    _, client = await gateway_client(settings_for(deployment("a", "m", upstream)))
    completion = await client.post("/v1/completions", json={"model": "m", "prompt": "Say hi"})
    assert completion.status_code == 200
    assert completion.json()["choices"][0]["text"] == "Hello from primary"
    embeddings = await client.post("/v1/embeddings", json={"model": "m", "input": ["ab", "abc"]})
    assert embeddings.status_code == 200
    assert [d["embedding"][0] for d in embeddings.json()["data"]] == [2.0, 3.0]
    models = await client.get("/v1/models")
    assert [m["id"] for m in models.json()["data"]] == ["m"]
    streamed = await client.post(
        "/v1/completions", json={"model": "m", "prompt": "x", "stream": True}
    )
    assert streamed.status_code == 200 and sse_events(streamed.content)[-1] == "[DONE]"


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        (b"{not json", 400, None),
        (b"[1, 2]", 400, None),
        (orjson.dumps({"model": "m", "messages": "hi"}), 400, "messages"),
        (orjson.dumps({"model": 5, "messages": CHAT["messages"]}), 400, "model"),
        (orjson.dumps(CHAT | {"temperature": "hot"}), 400, "temperature"),
        (orjson.dumps(CHAT | {"model": "unknown"}), 404, "model"),
        (
            orjson.dumps(
                CHAT
                | {
                    "tools": [
                        {
                            "type": "function",
                            "function": {"name": "t", "parameters": {"type": "array"}},
                        }
                    ]
                }
            ),
            400,
            "tools.0.function.parameters",
        ),
        (
            orjson.dumps(
                CHAT
                | {
                    "tools": [
                        {"type": "function", "function": {"name": "bad name!", "parameters": {}}}
                    ]
                }
            ),
            400,
            "tools.0.function.name",
        ),
    ],
)
async def test_bad_input_gets_a_4xx_with_an_openai_error_body(
    upstream: ScriptedUpstream,
    gateway_client: GatewayFactory,
    body: bytes,
    status: int,
    param: str | None,
) -> None:
    _, client = await gateway_client(settings_for(deployment("a", "m", upstream)))
    response = await client.post(
        "/v1/chat/completions", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == status
    error = response.json()["error"]
    assert error["message"] and error["type"]
    assert error["param"] == param
    assert upstream.served == 0


async def test_an_oversized_body_is_refused_with_413_at_the_configured_limit(
    upstream: ScriptedUpstream, gateway_client: GatewayFactory
) -> None:
    _, client = await gateway_client(
        settings_for(deployment("a", "m", upstream), max_body_bytes=2048)
    )
    big = CHAT | {"messages": [{"role": "user", "content": "x" * 4096}]}
    response = await client.post("/v1/chat/completions", json=big)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"

    async def chunks():  # no content-length: the limit holds while reading
        for _ in range(4):
            yield b" " * 1024

    streamed = await client.post("/v1/chat/completions", content=chunks())
    assert streamed.status_code == 413
    assert upstream.served == 0


@pytest.mark.parametrize(
    ("fault", "status", "kept"),
    [
        (Fault.error(400, "This model's maximum context length is 2048 tokens"), 400, "2048"),
        (Fault.error(404, "model gpt-x does not exist"), 404, "does not exist"),
        (Fault.error(422, "unprocessable"), 422, "unprocessable"),
        (Fault.error(401, "bad upstream key"), 502, "bad upstream key"),
        (Fault.error(500, "kaboom"), 502, "kaboom"),
        (Fault.error(429, "slow down", retry_after=60), 429, "slow down"),
    ],
)
async def test_upstream_errors_map_to_documented_statuses_keeping_the_message(
    upstream: ScriptedUpstream,
    gateway_client: GatewayFactory,
    fault: Fault,
    status: int,
    kept: str,
) -> None:
    upstream.default = fault
    _, client = await gateway_client(settings_for(deployment("a", "m", upstream)))
    response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == status
    assert kept in response.json()["error"]["message"]
    if status == 429:
        assert response.headers["retry-after"] == "60"


async def test_unknown_routes_and_methods_answer_in_json(
    upstream: ScriptedUpstream, gateway_client: GatewayFactory
) -> None:
    _, client = await gateway_client(settings_for(deployment("a", "m", upstream)))
    missing = await client.get("/v2/anything")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"
    wrong = await client.get("/v1/chat/completions")
    assert wrong.status_code == 405 and "error" in wrong.json()
