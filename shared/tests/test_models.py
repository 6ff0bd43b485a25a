from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genai_factory.shared.errors import ValidationError
from genai_factory.shared.models import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    Chunk,
    CostRecord,
    EmbeddingRequest,
    Principal,
    Verdict,
    parse,
)


def _chat(**extra: Any) -> dict[str, Any]:
    return {"model": "smollm2", "messages": [{"role": "user", "content": "hi"}], **extra}


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def test_a_full_openai_request_parses_and_keeps_unknown_fields() -> None:
    request = parse(
        ChatCompletionRequest,
        _chat(
            tools=[WEATHER_TOOL],
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            response_format={"type": "json_object"},
            stream=True,
            stream_options={"include_usage": True},
            max_completion_tokens=50,
            max_tokens=10,
            metadata={"team": "a"},
        ),
    )
    assert request.tools is not None and request.tools[0].function.name == "get_weather"
    assert request.output_limit == 50
    assert request.model_extra == {"metadata": {"team": "a"}}
    # dump -> parse is lossless
    assert parse(ChatCompletionRequest, request.model_dump(exclude_none=True)) == request


@pytest.mark.parametrize(
    ("patch", "param"),
    [
        ({"messages": []}, "messages"),
        ({"model": ""}, "model"),
        ({"temperature": 3}, "temperature"),
        ({"max_tokens": -1}, "max_tokens"),
        ({"max_tokens": "many"}, "max_tokens"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages.0.role"),
        ({"messages": [{"role": "user"}]}, "messages.0"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages.0"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        (
            {"tools": [{"type": "function", "function": {"name": "bad name!"}}]},
            "tools.0.function.name",
        ),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": 5}}}]},
            "tools.0.function.parameters",
        ),
        (
            {
                "tools": [
                    {
                        "type": "function",
                        "function": {"name": "f", "parameters": {"type": "string"}},
                    }
                ]
            },
            "tools.0.function.parameters",
        ),
        ({"tool_choice": {"type": "function", "function": {"name": "nope"}}}, ""),
        ({"response_format": {"type": "json_schema"}}, "response_format"),
    ],
)
def test_bad_requests_raise_validation_error_naming_the_field(
    patch: dict[str, Any], param: str
) -> None:
    with pytest.raises(ValidationError) as info:
        parse(ChatCompletionRequest, _chat(**patch))
    assert info.value.status == 400
    assert (info.value.param or "").startswith(param)


def test_assistant_tool_call_messages_need_no_content() -> None:
    request = parse(
        ChatCompletionRequest,
        _chat(
            messages=[
                {"role": "user", "content": "weather?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            ]
        ),
    )
    assert request.messages[1].text() == ""
    assert request.messages[2].text() == "sunny"


def test_multimodal_content_parts_join_their_text() -> None:
    request = parse(
        ChatCompletionRequest,
        _chat(
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is in "},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                        {"type": "text", "text": "this image?"},
                    ],
                }
            ]
        ),
    )
    assert request.messages[0].text() == "What is in this image?"
    with pytest.raises(ValidationError):
        parse(
            ChatCompletionRequest,
            _chat(messages=[{"role": "user", "content": [{"type": "image_url"}]}]),
        )


def test_responses_and_chunks_round_trip_from_provider_json() -> None:
    raw = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": "Paris"},
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
        "service_tier": "default",
    }
    response = parse(ChatCompletionResponse, raw)
    assert response.text() == "Paris"
    assert json.loads(response.model_dump_json(exclude_none=True))["service_tier"] == "default"
    chunk = parse(
        ChatCompletionChunk,
        {
            "id": "c",
            "model": "m",
            "choices": [{"index": 0, "delta": {"content": "Pa"}, "finish_reason": None}],
        },
    )
    assert chunk.choices[0].delta.content == "Pa"


def test_usage_fills_in_its_total() -> None:
    usage = parse(
        ChatCompletionResponse,
        {"model": "m", "choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 5}},
    ).usage
    assert usage is not None and usage.total_tokens == 7


def test_embedding_inputs() -> None:
    assert parse(EmbeddingRequest, {"model": "e", "input": "a"}).texts() == ["a"]
    assert parse(EmbeddingRequest, {"model": "e", "input": ["a", "b"]}).texts() == ["a", "b"]
    with pytest.raises(ValidationError, match="input"):
        parse(EmbeddingRequest, {"model": "e", "input": []})
    with pytest.raises(ValidationError):
        parse(EmbeddingRequest, {"model": "e", "input": [1, 2]}).texts()


def test_principal_tenant_verdict_and_cost_record() -> None:
    assert Principal(subject="key-1", org_id="acme").tenant == "acme"
    assert Principal(subject="key-1").tenant == "key-1"
    assert not Verdict(decision="block").allowed
    assert Verdict(decision="redact", text="[EMAIL]").allowed
    record = CostRecord(request_id="r", model="m", input_tokens=3, cost_usd="0.000123")
    assert str(record.cost_usd) == "0.000123"
    with pytest.raises(ValueError, match="start"):
        Chunk(document_id="d", text="x", start=5, end=2)


# ---------------------------------------------------------------- property-based: untrusted input

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)

messages = st.lists(
    st.fixed_dictionaries(
        {
            "role": st.sampled_from(["system", "user", "assistant", "tool", "bogus"]),
            "content": st.one_of(st.none(), st.text(max_size=30), json_values),
        },
        optional={"tool_call_id": st.text(max_size=5), "name": st.text(max_size=5)},
    ),
    max_size=4,
)

requests = st.fixed_dictionaries(
    {
        "model": st.one_of(st.text(max_size=10), json_values),
        "messages": st.one_of(messages, json_values),
    },
    optional={
        "temperature": st.one_of(st.floats(allow_nan=False), json_values),
        "max_tokens": st.one_of(st.integers(), json_values),
        "stop": st.one_of(st.text(max_size=5), st.lists(st.text(max_size=5), max_size=6)),
        "tools": json_values,
        "tool_choice": json_values,
        "response_format": json_values,
        "stream": json_values,
    },
)


@settings(max_examples=300, deadline=None)
@given(requests)
def test_any_json_request_either_parses_or_raises_validation_error(data: dict[str, Any]) -> None:
    try:
        request = parse(ChatCompletionRequest, data)
    except ValidationError as exc:
        assert exc.status == 400
        assert exc.message.startswith("invalid")
    else:
        assert request.messages
        assert parse(ChatCompletionRequest, request.model_dump(by_alias=True)) == request


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_any_json_value_is_a_clean_error_for_every_model(data: Any) -> None:
    for model in (ChatCompletionResponse, ChatCompletionChunk, EmbeddingRequest, Principal):
        with contextlib.suppress(ValidationError):
            parse(model, data)
