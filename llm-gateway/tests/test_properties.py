"""Property tests (Hypothesis) for everything that parses untrusted input."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genai_factory.gateway import anthropic_format
from genai_factory.gateway.app import create_app
from genai_factory.gateway.providers.aws import EventStreamDecoder, EventStreamError, encode_message
from genai_factory.gateway.providers.base import classify_error, parse_retry_after
from genai_factory.gateway.runtime import Gateway
from genai_factory.gateway.sse import iter_sse
from genai_factory.shared.errors import GFError, ProviderError

from .conftest import settings_for

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=20,
)
chat_like = st.fixed_dictionaries(
    {},
    optional={
        "model": st.sampled_from(["m", "", "x" * 300]) | json_values,
        "messages": st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    "role": st.sampled_from(["user", "assistant", "tool", "system", "bot"]),
                    "content": json_values,
                    "tool_calls": json_values,
                },
            ),
            max_size=3,
        )
        | json_values,
        "max_tokens": st.integers(-5, 10) | json_values,
        "stream": st.booleans() | json_values,
        "tools": json_values,
        "tool_choice": json_values,
        "system": json_values,
        "temperature": st.floats(-1, 3) | json_values,
        "response_format": json_values,
    },
)
line_text = st.text(max_size=30).filter(lambda t: "\n" not in t and "\r" not in t)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])  # a busy CI box
@given(
    st.lists(
        st.tuples(st.sampled_from(["message", "ping", "error"]), line_text, st.booleans()),
        max_size=6,
    )
)
def test_sse_events_come_out_as_they_went_in(events: list[tuple[str, str, bool]]) -> None:
    wire = b"".join(
        (b": keep-alive\n" if comment else b"") + f"event: {name}\ndata: {data}\n\n".encode()
        for name, data, comment in events
    )

    async def read() -> list[tuple[str, str]]:
        async def lines() -> Any:
            for line in wire.splitlines(keepends=True):
                yield line

        return [(e.event, e.data) async for e in iter_sse(lines())]

    assert asyncio.run(read()) == [(name, data) for name, data, _ in events]


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])  # a busy CI box
@given(json_values)
def test_anthropic_translation_accepts_or_refuses_cleanly(body: Any) -> None:
    if not isinstance(body, dict):
        body = {"value": body}
    try:
        chat = anthropic_format.request_to_chat(body)
    except GFError as exc:
        assert exc.status == 400
    else:
        assert chat.messages and chat.max_tokens


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])  # a busy CI box
@given(
    st.integers(100, 599),
    st.binary(max_size=60) | json_values.map(orjson.dumps),
    st.text(max_size=12),
)
def test_every_upstream_error_is_classified(status: int, body: bytes, retry_after: str) -> None:
    error = classify_error("p", status, body, {"retry-after": retry_after})
    assert isinstance(error, ProviderError) and error.upstream_status == status
    assert error.retryable == (status in (408, 409, 425, 429) or status >= 500)
    assert error.retry_after is None or error.retry_after >= 0
    assert error.message.startswith("p: ")


def test_retry_after_takes_seconds_milliseconds_and_dates() -> None:
    assert parse_retry_after({"retry-after": "2.5"}) == 2.5
    assert parse_retry_after({"retry-after-ms": "1500"}) == 1.5
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


def decode_everything(wire: bytes) -> None:
    decoder = EventStreamDecoder()
    list(decoder.feed(wire))
    if decoder.pending:  # a corrupted length leaves a frame waiting for bytes that never come
        raise EventStreamError("incomplete frame at the end of the stream")


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])  # a busy CI box
@given(
    st.lists(
        st.tuples(
            st.dictionaries(
                st.text("abc:-", min_size=1, max_size=8), st.text(max_size=8), max_size=3
            ),
            st.binary(max_size=40),
        ),
        max_size=4,
    ),
    st.integers(1, 50),
    st.integers(0, 10_000),
)
def test_event_stream_frames_round_trip_and_corruption_is_caught(
    frames: list[tuple[dict[str, str], bytes]], piece: int, flip: int
) -> None:
    wire = b"".join(encode_message(h, p) for h, p in frames)
    decoder = EventStreamDecoder()
    decoded = [m for i in range(0, len(wire), piece) for m in decoder.feed(wire[i : i + piece])]
    assert [(m.headers, m.payload) for m in decoded] == list(frames)
    if wire:
        broken = bytearray(wire)
        broken[flip % len(broken)] ^= 0x01
        with pytest.raises(EventStreamError):
            decode_everything(bytes(broken))


@pytest.fixture(scope="module")
def live() -> Iterator[tuple[asyncio.AbstractEventLoop, httpx.AsyncClient]]:
    """One loop and one in-process gateway for every example (upstream: a closed port)."""
    loop = asyncio.new_event_loop()
    gateway = Gateway(
        settings_for(
            {"name": "a", "model": "m", "base_url": "http://127.0.0.1:9/v1"},
            retry={"max_retries": 0},
        )
    )
    transport = httpx.ASGITransport(app=create_app(gateway))
    client = httpx.AsyncClient(transport=transport, base_url="http://g")
    yield loop, client
    loop.run_until_complete(client.aclose())
    loop.run_until_complete(gateway.aclose())
    loop.close()


@settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    chat_like,
    st.sampled_from(["/v1/chat/completions", "/v1/messages", "/v1/completions", "/v1/embeddings"]),
)
def test_no_request_body_makes_the_gateway_fail_with_a_500(
    live: tuple[asyncio.AbstractEventLoop, httpx.AsyncClient], body: dict[str, Any], path: str
) -> None:
    loop, client = live
    response = loop.run_until_complete(client.post(path, content=orjson.dumps(body)))
    # a valid request reaches the (closed) upstream: 502 is the honest answer, 500 never is
    assert response.status_code in (400, 401, 404, 413, 422, 502, 503), response.text
    assert response.json()
