"""A fast mock OpenAI upstream for benchmarks: canned answers from a bare asyncio Protocol.

Usage: python fast_upstream.py PORT   (uvloop when installed). Answers any POST with a fixed chat
completion, or a fixed SSE stream of 8 chunks when the body asks for ``"stream":true``; keep-alive.
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
from typing import Any

import orjson

_LENGTH = re.compile(rb"content-length:\s*(\d+)", re.IGNORECASE)


def _answer() -> bytes:
    body = orjson.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": "bench",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "The quick brown fox jumps."},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18},
        }
    )
    head = (
        f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _stream() -> bytes:
    base = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "bench",
    }
    events = [{"index": 0, "delta": {"role": "assistant", "content": ""}}]
    events += [{"index": 0, "delta": {"content": f"word{i} "}} for i in range(8)]
    events.append({"index": 0, "delta": {}, "finish_reason": "stop"})
    body = b"".join(b"data: " + orjson.dumps(base | {"choices": [e]}) + b"\n\n" for e in events)
    body += b"data: [DONE]\n\n"
    head = (
        f"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


ANSWER, STREAM = _answer(), _stream()


class Upstream(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport  # uvloop's transports are not asyncio.Transport subclasses
        self.buffer = bytearray()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            match = _LENGTH.search(self.buffer, 0, end)
            total = end + 4 + (int(match.group(1)) if match else 0)
            if len(self.buffer) < total:
                return
            body = bytes(self.buffer[end + 4 : total])
            del self.buffer[:total]
            self.transport.write(STREAM if b'"stream":true' in body else ANSWER)


async def main(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Upstream, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    asyncio.run(main(int(sys.argv[1])))
