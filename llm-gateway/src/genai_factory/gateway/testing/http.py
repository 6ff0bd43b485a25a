"""A minimal HTTP/1.1 server on asyncio streams, with the low-level control fault tests need.

It keeps connections alive, reads ``content-length`` bodies, and lets a handler answer whole,
stream chunked pieces, or misbehave: reset the TCP connection, close it silently, or stall.

Example:
    >>> import asyncio, urllib.request
    >>> async def hello(request, reply):
    ...     await reply.send(200, b"hi", {"content-type": "text/plain"})
    >>> async def main():
    ...     server = await MiniHTTPServer(hello).start()
    ...     loop = asyncio.get_running_loop()
    ...     body = await loop.run_in_executor(None, lambda: urllib.request.urlopen(
    ...         f"http://127.0.0.1:{server.port}/").read())
    ...     await server.stop()
    ...     return body
    >>> asyncio.run(main())
    b'hi'
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

__all__ = ["HTTPRequest", "Handler", "MiniHTTPServer", "Reply"]

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    413: "Payload Too Large",
    424: "Failed Dependency",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    529: "Overloaded",
}


@dataclass
class HTTPRequest:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.target).query)


@dataclass
class Reply:
    """How a handler answers; exactly one of send / start + write + end / reset / close."""

    writer: asyncio.StreamWriter
    keep_alive: bool = True
    done: bool = False
    _chunked: bool = field(default=False, repr=False)

    def _head(self, status: int, headers: Mapping[str, str]) -> bytes:
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def send(
        self, status: int, body: bytes, headers: Mapping[str, str] | None = None
    ) -> None:
        all_headers = {"content-length": str(len(body)), **(headers or {})}
        self.writer.write(self._head(status, all_headers) + body)
        await self.writer.drain()
        self.done = True

    async def start(self, status: int, headers: Mapping[str, str] | None = None) -> None:
        self._chunked = True
        all_headers = {"transfer-encoding": "chunked", **(headers or {})}
        self.writer.write(self._head(status, all_headers))
        await self.writer.drain()

    async def write(self, data: bytes) -> None:
        if data:
            self.writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            await self.writer.drain()

    async def end(self) -> None:
        self.writer.write(b"0\r\n\r\n")
        await self.writer.drain()
        self.done = True

    def reset(self) -> None:
        """Abort the connection with a TCP RST (SO_LINGER 0)."""
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()
        self.done, self.keep_alive = True, False

    def close(self) -> None:
        """Close the connection without (finishing) an answer."""
        self.writer.close()
        self.done, self.keep_alive = True, False


Handler = Callable[[HTTPRequest, Reply], Awaitable[None]]


class MiniHTTPServer:
    """Serves ``handler`` on 127.0.0.1 (a free port unless one is given)."""

    def __init__(self, handler: Handler, port: int = 0) -> None:
        self.handler = handler
        self.port = port
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()

    async def start(self) -> MiniHTTPServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, limit=2**22)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for writer in list(self._connections):
            writer.transport.abort()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 2.0)
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections.add(writer)
        try:
            while True:
                request = await self._read(reader)
                if request is None:
                    break
                reply = Reply(writer)
                reply.keep_alive = request.headers.get("connection", "").lower() != "close"
                await self.handler(request, reply)
                if not reply.done:
                    await reply.send(500, b"handler gave no answer")
                if not reply.keep_alive:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self._connections.discard(writer)
            if not writer.is_closing():
                writer.close()

    @staticmethod
    async def _read(reader: asyncio.StreamReader) -> HTTPRequest | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length") or 0)
        body = await reader.readexactly(length) if length else b""
        return HTTPRequest(method, target, headers, body)
