"""Server-sent events: read them from an upstream's byte lines, write them to a client.

The reader follows the WHATWG event-stream rules that matter for model APIs: ``event:`` and
``data:`` fields, several ``data:`` lines joined with newlines, comments (``:``) ignored, and an
event dispatched at each blank line.

Example:
    >>> import asyncio
    >>> async def lines():
    ...     for line in (b"event: ping\\n", b"data: {}\\n", b"\\n", b"data: [DONE]\\n", b"\\n"):
    ...         yield line
    >>> async def collect():
    ...     return [(e.event, e.data) async for e in iter_sse(lines())]
    >>> asyncio.run(collect())
    [('ping', '{}'), ('message', '[DONE]')]
    >>> encode_sse({"a": 1})
    b'data: {"a":1}\\n\\n'
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = ["DONE_EVENT", "SSEEvent", "encode_sse", "iter_sse"]

DONE_EVENT = b"data: [DONE]\n\n"


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One dispatched event: its type (``message`` unless named) and its data."""

    event: str
    data: str


async def iter_sse(lines: AsyncIterable[bytes]) -> AsyncIterator[SSEEvent]:
    """Events from an async iterable of byte lines (each may end with ``\\n`` or ``\\r\\n``)."""
    event = ""
    data: list[str] = []
    async for raw in lines:
        line = raw.decode("utf-8").rstrip("\r\n")
        if not line:
            if data:
                yield SSEEvent(event or "message", "\n".join(data))
            event, data = "", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
    if data:  # a last event without its blank line still counts
        yield SSEEvent(event or "message", "\n".join(data))


def encode_sse(payload: Any, event: str | None = None) -> bytes:
    """One SSE event with JSON data (``event:`` line only when named)."""
    body = b"data: " + orjson.dumps(payload) + b"\n\n"
    if event is None:
        return body
    return b"event: " + event.encode() + b"\n" + body
