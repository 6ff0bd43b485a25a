"""ASGI pieces of the REST server: the body-size limit, SSE responses that always clean up, and
cancelling work whose client has gone.

Example:
    >>> from genai_factory.serving.server.asgi import sse_event
    >>> sse_event({"a": 1})
    b'data: {"a":1}\\n\\n'
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import anyio
from pydantic import BaseModel
from starlette.responses import JSONResponse, StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from genai_factory.shared.errors import GFError, PayloadTooLarge, ValidationError, to_http

__all__ = [
    "DONE_EVENT",
    "BodyLimitMiddleware",
    "ClientGone",
    "EventStreamResponse",
    "sse_event",
    "sse_events",
    "until_disconnect",
]

T = TypeVar("T")

logger = logging.getLogger("genai_factory.serving.server")

DONE_EVENT = b"data: [DONE]\n\n"


def sse_event(payload: BaseModel | dict[str, Any]) -> bytes:
    """One server-sent event carrying ``payload`` as compact JSON."""
    if isinstance(payload, BaseModel):
        text = payload.model_dump_json(exclude_none=True, by_alias=True)
    else:
        text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    return b"data: " + text.encode("utf-8") + b"\n\n"


async def sse_events(
    payloads: AsyncIterator[BaseModel | dict[str, Any]],
) -> AsyncIterator[bytes]:
    """``payloads`` as SSE events and a final ``data: [DONE]``; an error mid-stream becomes an
    ``{"error": ...}`` event (the status line has gone out already) and ends the stream."""
    try:
        async for payload in payloads:
            yield sse_event(payload)
    except GFError as exc:
        yield sse_event(to_http(exc)[1])
        return
    except Exception:
        logger.exception("stream failed")
        yield sse_event(to_http(RuntimeError())[1])
        return
    yield DONE_EVENT


class EventStreamResponse(StreamingResponse):
    """An SSE response that runs ``on_close`` when it ends for any reason: finished, client
    disconnected, or cancelled by a shutting-down server. Closing the engine's stream there stops
    generation at once instead of when the generator is garbage-collected."""

    media_type = "text/event-stream"

    def __init__(
        self, content: AsyncIterator[bytes], on_close: Callable[[], Awaitable[None]]
    ) -> None:
        super().__init__(content, headers={"cache-control": "no-cache", "x-accel-buffering": "no"})
        self._content = content
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                close = getattr(self._content, "aclose", None)
                if close is not None:
                    with contextlib.suppress(Exception):
                        await close()
                await self._on_close()


class ClientGone(Exception):
    """The client disconnected before its answer was ready."""


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def until_disconnect(receive: Receive, work: Awaitable[T]) -> T:
    """Await ``work`` unless the client disconnects first: then cancel it and raise ClientGone."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(receive))
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        raise ClientGone
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


class BodyLimitMiddleware:
    """Reads each request body up to ``max_bytes`` and answers 413 beyond; the app then sees
    the whole body at once (and later receives, such as a disconnect, as usual)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _refuse(self, error: GFError, scope: Scope, receive: Receive, send: Send) -> None:
        status, body, headers = to_http(error)
        await JSONResponse(body, status_code=status, headers=headers)(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = PayloadTooLarge(
            f"the request body is larger than {self.max_bytes} bytes", code="body_too_large"
        )
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await self._refuse(
                        ValidationError("invalid Content-Length header"), scope, receive, send
                    )
                    return
                if declared > self.max_bytes:
                    await self._refuse(too_large, scope, receive, send)
                    return
        parts: list[bytes] = []
        size = 0
        first: Message | None = None
        while True:
            message = await receive()
            if message["type"] != "http.request":
                first = message  # a disconnect before the body ended: let the app see it
                break
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                await self._refuse(too_large, scope, receive, send)
                return
            parts.append(body)
            if not message.get("more_body", False):
                break
        pending: list[Message] = [
            first or {"type": "http.request", "body": b"".join(parts), "more_body": False}
        ]

        async def replay() -> Message:
            if pending:
                return pending.pop()
            return await receive()

        await self.app(scope, replay, send)
