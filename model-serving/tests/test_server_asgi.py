"""The ASGI pieces on their own: body limit, SSE framing and clean-up, disconnect handling."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.types import Message, Receive, Scope, Send

from genai_factory.serving.server.asgi import (
    BodyLimitMiddleware,
    ClientGone,
    EventStreamResponse,
    sse_events,
    until_disconnect,
)
from genai_factory.serving.testing import sse_payloads
from genai_factory.shared.errors import RateLimited

pytestmark = pytest.mark.unit


async def echo_length(scope: Scope, receive: Receive, send: Send) -> None:
    message = await receive()
    body = message.get("body", b"")
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(len(body)).encode()})


@settings(max_examples=60, deadline=None)
@given(chunks=st.lists(st.integers(min_value=0, max_value=700), max_size=6), declared=st.booleans())
def test_the_body_limit_holds_however_the_body_arrives(chunks: list[int], declared: bool) -> None:
    limit = 1024
    total = sum(chunks)

    async def scenario() -> httpx.Response:
        app = BodyLimitMiddleware(echo_length, max_bytes=limit)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as http:
            if declared:
                return await http.post("/", content=b"x" * total)

            async def stream() -> AsyncIterator[bytes]:
                for size in chunks:
                    yield b"x" * size

            return await http.post("/", content=stream())

    response = asyncio.run(scenario())
    if total > limit:
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "body_too_large"
    else:
        assert (response.status_code, response.text) == (200, str(total))


async def test_a_non_http_scope_passes_through() -> None:
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])

    async def receive() -> Message:
        return {"type": "lifespan.startup"}

    async def send(message: Message) -> None:
        pass

    await BodyLimitMiddleware(app, max_bytes=10)({"type": "lifespan"}, receive, send)
    assert seen == ["lifespan"]


async def test_errors_mid_stream_become_an_error_event_without_done() -> None:
    async def refused() -> AsyncIterator[dict[str, Any]]:
        yield {"n": 1}
        raise RateLimited("slow down", code="queue_full")

    events = sse_payloads(b"".join([e async for e in sse_events(refused())]).decode())
    assert events == [
        {"n": 1},
        {
            "error": {
                "message": "slow down",
                "type": "rate_limit_exceeded",
                "param": None,
                "code": "queue_full",
            }
        },
    ]

    async def broken() -> AsyncIterator[dict[str, Any]]:
        yield {"n": 1}
        raise RuntimeError("secret detail")

    text = b"".join([e async for e in sse_events(broken())]).decode()
    assert "secret detail" not in text
    assert sse_payloads(text)[-1]["error"]["type"] == "server_error"


async def test_the_event_stream_cleans_up_when_the_client_leaves() -> None:
    closed = asyncio.Event()
    produced: list[int] = []

    async def endless() -> AsyncIterator[bytes]:
        for n in range(1_000_000):
            produced.append(n)
            yield f"data: {json.dumps({'n': n})}\n\n".encode()
            await asyncio.sleep(0.001)

    async def on_close() -> None:
        closed.set()

    response = EventStreamResponse(endless(), on_close=on_close)
    messages: list[Message] = [{"type": "http.request", "body": b"", "more_body": False}]
    left = asyncio.Event()

    async def receive() -> Message:
        if messages:
            return messages.pop()
        await left.wait()
        return {"type": "http.disconnect"}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)
        if len(sent) == 4:
            left.set()  # the client goes away after three events

    await asyncio.wait_for(
        response({"type": "http", "asgi": {"spec_version": "2.3"}}, receive, send), 10
    )
    assert closed.is_set()
    assert len(produced) < 50


async def test_until_disconnect_cancels_the_work_when_the_client_leaves() -> None:
    cancelled = asyncio.Event()

    async def slow() -> str:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "late"

    async def gone() -> Message:
        return {"type": "http.disconnect"}

    with pytest.raises(ClientGone):
        await until_disconnect(gone, slow())
    assert cancelled.is_set()

    async def stays() -> Message:
        await asyncio.sleep(60)
        return {"type": "http.disconnect"}

    async def quick() -> str:
        return "done"

    assert await until_disconnect(stays, quick()) == "done"
