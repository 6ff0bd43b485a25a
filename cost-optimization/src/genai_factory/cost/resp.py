"""A small asyncio Redis client for the budget scripts' hot path.

Why not redis-py's asyncio client: a budget check and its settlement are one script call each,
and redis-py spends about as much CPU on a call as our whole budget logic (a connection pool, a
per-read timeout, several event-loop turns per command). This client does only what the budget
backend needs: one connection per client, commands pipelined over it (a FIFO of futures, replies
parsed by hiredis in C), ``EVALSHA`` with a ``SCRIPT LOAD`` fallback, one deadline per call,
reconnection on the next call after a failure.

URLs: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` (TLS, verified against the
system's CAs) and ``unix://[[user]:password@]/path/to/socket[?db=N]``.

Errors: an unreachable, timed-out or misbehaving server raises
:class:`~genai_factory.shared.errors.ServiceUnavailable` (the caller may retry); an error reply
(a failed script, a wrong type) raises :class:`RedisReplyError`.

Example (needs a Redis server)::

    client = RespClient("redis://127.0.0.1:6379/0")
    await client.execute("SET", "greeting", "hello")
    script = RedisScript("return redis.call('GET', KEYS[1])")
    assert await client.evalsha(script, ["greeting"], []) == "hello"
    await client.close()
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

import hiredis

from genai_factory.shared.errors import ConfigError, GFError, ServiceUnavailable

__all__ = ["RedisAddress", "RedisReplyError", "RedisScript", "RespClient", "parse_redis_url"]

Arg = str | bytes | int | float


class RedisReplyError(GFError):
    """Redis answered a command with an error (e.g. a script's ``error_reply``)."""

    error_type = "server_error"

    def __init__(self, message: str) -> None:
        super().__init__(message, code="redis_error")


@dataclass(frozen=True)
class RedisAddress:
    """Where and how to connect, parsed from a URL by :func:`parse_redis_url`."""

    host: str = "127.0.0.1"
    port: int = 6379
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False
    unix_path: str | None = None

    def __repr__(self) -> str:  # never print the password
        where = self.unix_path or f"{self.host}:{self.port}"
        return f"RedisAddress({where}, db={self.db}, tls={self.tls})"


def parse_redis_url(url: str) -> RedisAddress:
    """Parse a ``redis://``, ``rediss://`` or ``unix://`` URL; anything else is a ConfigError.

    >>> parse_redis_url("redis://:s3cret@cache.internal:6380/2").port
    6380
    >>> parse_redis_url("unix:///run/redis.sock?db=1").unix_path
    '/run/redis.sock'
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"invalid Redis URL: {exc}", param="url") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("redis", "rediss", "unix"):
        raise ConfigError("a Redis URL starts with redis://, rediss:// or unix://", param="url")
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    query = parse_qs(parts.query)
    db_text = query["db"][0] if "db" in query else ""
    if scheme != "unix" and parts.path.strip("/"):
        db_text = parts.path.strip("/")
    try:
        db = int(db_text) if db_text else 0
    except ValueError:
        raise ConfigError(
            f"the Redis database must be a number, not {db_text!r}", param="url"
        ) from None
    if db < 0:
        raise ConfigError("the Redis database must not be negative", param="url")
    if scheme == "unix":
        if not parts.path:
            raise ConfigError("a unix:// Redis URL needs a socket path", param="url")
        return RedisAddress(db=db, username=username, password=password, unix_path=parts.path)
    return RedisAddress(
        host=parts.hostname or "127.0.0.1",
        port=port or 6379,
        db=db,
        username=username,
        password=password,
        tls=scheme == "rediss",
    )


class RedisScript:
    """A Lua script, called by its SHA1 (loaded into the server on first use)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()


class _Protocol(asyncio.Protocol):
    """One connection: requests go out in order, so the replies answer the futures in order."""

    def __init__(self) -> None:
        self._reader = hiredis.Reader(encoding="utf-8", errors="replace")
        self._waiters: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a cast, not an isinstance check: uvloop's transports do not subclass asyncio's
        self._transport = cast(asyncio.Transport, transport)

    def send(self, payload: bytes, waiter: asyncio.Future[Any]) -> None:
        if self.closed or self._transport is None:
            raise ConnectionError("the connection is closed")
        self._waiters.append(waiter)
        self._transport.write(payload)

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        try:
            while (reply := self._reader.gets()) is not False:
                if not self._waiters:
                    raise hiredis.ProtocolError("a reply nobody asked for")
                waiter = self._waiters.popleft()
                if not waiter.done():  # a caller that timed out is gone; its reply is dropped
                    waiter.set_result(reply)
        except hiredis.ProtocolError as exc:
            self.close(ConnectionError(f"Redis protocol error: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail_waiters(exc or ConnectionError("connection closed by the server"))

    def close(self, exc: Exception | None = None) -> None:
        self.closed = True
        self._fail_waiters(exc or ConnectionError("connection closed"))
        if self._transport is not None:
            self._transport.close()

    def _fail_waiters(self, exc: Exception) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(exc)


class RespClient:
    """Commands over one pipelined connection, opened on first use and reopened after a failure.

    ``timeout_s`` bounds every call, connecting included.
    """

    def __init__(self, url: str, *, timeout_s: float = 5.0) -> None:
        if not timeout_s > 0:
            raise ConfigError("'timeout_s' must be positive", param="timeout_s")
        self.address = parse_redis_url(url)
        self.timeout_s = timeout_s
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Lock | None = None

    async def execute(self, *args: Arg) -> Any:
        """Send one command and return its reply (str, int, None or a list of those)."""
        reply = await self._call(_pack(args))
        if isinstance(reply, hiredis.ReplyError):
            raise RedisReplyError(str(reply))
        return reply

    async def evalsha(self, script: RedisScript, keys: Sequence[Arg], args: Sequence[Arg]) -> Any:
        """Run ``script``: ``EVALSHA``, and ``SCRIPT LOAD`` first if the server does not know it
        (a restarted or flushed server)."""
        payload = _pack(("EVALSHA", script.sha, len(keys), *keys, *args))
        reply = await self._call(payload)
        if isinstance(reply, hiredis.ReplyError) and str(reply).startswith("NOSCRIPT"):
            await self.execute("SCRIPT", "LOAD", script.source)
            reply = await self._call(payload)
        if isinstance(reply, hiredis.ReplyError):
            raise RedisReplyError(str(reply))
        return reply

    async def close(self) -> None:
        if self._protocol is not None:
            self._protocol.close()
            self._protocol = None

    async def _call(self, payload: bytes) -> Any:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Any] = loop.create_future()
        deadline = loop.time() + self.timeout_s
        protocol = self._protocol
        try:
            if protocol is None or protocol.closed:
                protocol = await asyncio.wait_for(self._connect(), self.timeout_s)
            protocol.send(payload, waiter)
            # one timer per call; a reply that arrives first cancels it
            timer = loop.call_at(deadline, _expire, waiter)
            try:
                return await waiter
            finally:
                timer.cancel()
        except TimeoutError as exc:
            # the connection may be stuck: drop it, the next call opens a fresh one
            if protocol is not None:
                protocol.close()
            raise ServiceUnavailable(
                f"budget store unavailable: no answer within {self.timeout_s:g} s",
                retry_after=1.0,
            ) from exc
        except OSError as exc:  # ConnectionError and ssl.SSLError are OSErrors
            raise ServiceUnavailable(
                f"budget store unavailable: {type(exc).__name__}: {exc}", retry_after=1.0
            ) from exc

    async def _connect(self) -> _Protocol:
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:  # concurrent first calls share one connection
            if self._protocol is not None and not self._protocol.closed:
                return self._protocol
            loop = asyncio.get_running_loop()
            address = self.address
            protocol: _Protocol
            if address.unix_path is not None:
                _, protocol = await loop.create_unix_connection(_Protocol, address.unix_path)
            else:
                context = ssl.create_default_context() if address.tls else None
                _, protocol = await loop.create_connection(
                    _Protocol, address.host, address.port, ssl=context
                )
            try:
                await self._handshake(protocol)
            except BaseException:
                protocol.close()
                raise
            self._protocol = protocol
            return protocol

    async def _handshake(self, protocol: _Protocol) -> None:
        address = self.address
        commands: list[tuple[str, ...]] = []
        if address.password is not None:
            who: tuple[str, ...] = (address.username,) if address.username else ()
            commands.append(("AUTH", *who, address.password))
        if address.db:
            commands.append(("SELECT", str(address.db)))
        loop = asyncio.get_running_loop()
        waiters = []
        for command in commands:  # pipelined: one round trip for both
            waiter: asyncio.Future[Any] = loop.create_future()
            protocol.send(_pack(command), waiter)
            waiters.append(waiter)
        for command, waiter in zip(commands, waiters, strict=True):
            reply = await waiter
            if isinstance(reply, hiredis.ReplyError):
                # never echo the command: AUTH carries the password
                raise ConnectionError(f"Redis refused {command[0]}: {reply}")


def _pack(command: tuple[Arg, ...]) -> bytes:
    # hiredis's stub types the argument as a one-element tuple; any length is accepted
    packed: bytes = hiredis.pack_command(command)  # type: ignore[arg-type]
    return packed


def _expire(waiter: asyncio.Future[Any]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())
