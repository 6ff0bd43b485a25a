"""The budget backend's own Redis client: against the real server, and against small fake servers
for what a healthy Redis never does (refuse a password, drop the line, answer garbage, stall)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

import hiredis
import pytest
from hypothesis import given
from hypothesis import strategies as st

from genai_factory.cost.resp import (
    RedisAddress,
    RedisReplyError,
    RedisScript,
    RespClient,
    parse_redis_url,
)
from genai_factory.shared.errors import ConfigError, ServiceUnavailable

# ---------------------------------------------------------------------------------- URLs

hosts = st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z][a-z0-9-]{0,10}){0,2}", fullmatch=True)
secrets = st.text(min_size=1, max_size=30).filter(lambda s: "\x00" not in s)


@given(
    host=hosts,
    port=st.integers(1, 65535),
    db=st.integers(0, 10_000),
    username=st.none() | secrets,
    password=st.none() | secrets,
    tls=st.booleans(),
)
def test_a_url_parses_back_to_its_parts(
    host: str, port: int, db: int, username: str | None, password: str | None, tls: bool
) -> None:
    credentials = ""
    if password is not None:
        credentials = f"{quote(username or '', safe='')}:{quote(password, safe='')}@"
    url = f"{'rediss' if tls else 'redis'}://{credentials}{host}:{port}/{db}"
    address = parse_redis_url(url)
    assert address == RedisAddress(
        host=host,
        port=port,
        db=db,
        username=username if password is not None and username else None,
        password=password,
        tls=tls,
    )


def test_the_password_stays_out_of_the_repr() -> None:
    address = parse_redis_url("redis://app:hunter2-secret@cache:6379/1")
    assert address.password == "hunter2-secret" and "hunter2" not in repr(address)


def test_defaults_and_unix_sockets() -> None:
    assert parse_redis_url("redis://localhost") == RedisAddress(host="localhost")
    unix = parse_redis_url("unix://:pw@/run/redis/redis.sock?db=4")
    assert (unix.unix_path, unix.db, unix.password) == ("/run/redis/redis.sock", 4, "pw")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:6379",
        "127.0.0.1:6379",
        "redis://127.0.0.1:notaport/0",
        "redis://127.0.0.1:99999/0",
        "redis://127.0.0.1:6379/zero",
        "redis://127.0.0.1:6379/-1",
        "unix://",
    ],
)
def test_bad_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_redis_url(url)
    assert caught.value.param == "url"


@given(st.text(max_size=80))
def test_any_text_is_an_address_or_a_config_error(text: str) -> None:
    try:
        address = parse_redis_url(text)
    except ConfigError:
        return
    assert address.db >= 0 and 0 <= address.port <= 65535


def test_a_non_positive_timeout_is_refused() -> None:
    with pytest.raises(ConfigError):
        RespClient("redis://127.0.0.1", timeout_s=0)


# ---------------------------------------------------------------------------------- real Redis


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[RespClient]:
    client = RespClient(redis_url, timeout_s=2)
    yield client
    await client.close()


async def test_commands_against_redis(client: RespClient, redis_namespace: str) -> None:
    key = f"{redis_namespace}greeting"
    assert await client.execute("SET", key, "héllo") == "OK"
    assert await client.execute("GET", key) == "héllo"
    assert await client.execute("INCRBY", f"{redis_namespace}n", 41) == 41
    assert await client.execute("MGET", key, f"{redis_namespace}absent") == ["héllo", None]
    # an error reply is a typed error, and the connection stays usable
    with pytest.raises(RedisReplyError, match="not an integer"):
        await client.execute("INCR", key)
    assert await client.execute("GET", key) == "héllo"


async def test_a_script_unknown_to_the_server_is_loaded_and_run(
    client: RespClient, redis_namespace: str
) -> None:
    # a source no other test uses, so the first EVALSHA is answered NOSCRIPT
    script = RedisScript(f"-- {uuid.uuid4()}\nreturn {{KEYS[1], ARGV[1], tonumber(ARGV[2]) + 1}}")
    assert await client.execute("SCRIPT", "EXISTS", script.sha) == [0]
    reply = await client.evalsha(script, [f"{redis_namespace}k"], ["v", 41])
    assert reply == [f"{redis_namespace}k", "v", 42]
    assert await client.execute("SCRIPT", "EXISTS", script.sha) == [1]
    failing = RedisScript(f"-- {uuid.uuid4()}\nreturn redis.error_reply('no luck')")
    with pytest.raises(RedisReplyError, match="no luck"):
        await client.evalsha(failing, [], [])


async def test_concurrent_callers_each_get_their_own_reply(client: RespClient) -> None:
    # one pipelined connection: replies must reach the caller whose command they answer
    tokens = [uuid.uuid4().hex for _ in range(300)]
    replies = await asyncio.gather(*(client.execute("ECHO", t) for t in tokens))
    assert replies == tokens


async def test_the_database_in_the_url_is_selected(redis_url: str, redis_namespace: str) -> None:
    base = redis_url.rsplit("/", 1)[0] if redis_url.count("/") > 2 else redis_url
    key = f"{redis_namespace}db-check"
    in_db_3 = RespClient(f"{base}/3")
    in_db_0 = RespClient(f"{base}/0")
    try:
        await in_db_3.execute("SET", key, "three", "EX", 60)
        assert await in_db_3.execute("GET", key) == "three"
        assert await in_db_0.execute("GET", key) is None
    finally:
        await in_db_3.execute("DEL", key)
        await in_db_3.close()
        await in_db_0.close()


# ---------------------------------------------------------------------------------- fake servers

Handler = Callable[[list[Any], asyncio.StreamWriter], Awaitable[bool]]


@asynccontextmanager
async def fake_redis(answer: Handler) -> AsyncIterator[tuple[str, list[list[Any]], list[int]]]:
    """A server that parses RESP commands and lets ``answer`` reply (or not); False hangs up.

    Yields the URL, every command received and a one-element connection count."""
    received: list[list[Any]] = []
    connections = [0]

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections[0] += 1
        parser = hiredis.Reader(encoding="utf-8")
        try:
            while data := await reader.read(65536):
                parser.feed(data)
                while (command := parser.gets()) is not False:
                    received.append(command)
                    if not await answer(command, writer):
                        return
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"redis://127.0.0.1:{port}", received, connections
    finally:
        server.close()
        await server.wait_closed()


async def echo_ok(command: list[Any], writer: asyncio.StreamWriter) -> bool:
    """+OK to AUTH/SELECT, the last argument back to anything else."""
    if command[0] in ("AUTH", "SELECT"):
        writer.write(b"+OK\r\n")
    else:
        writer.write(hiredis.pack_command((command[-1],))[4:])  # "*1\r\n" off: one bulk string
    await writer.drain()
    return True


def reply_with(raw: bytes) -> Handler:
    """A handler that answers every command with ``raw``."""

    async def answer(command: list[Any], writer: asyncio.StreamWriter) -> bool:
        writer.write(raw)
        await writer.drain()
        return True

    return answer


async def test_credentials_and_database_are_sent_once_per_connection() -> None:
    async with fake_redis(echo_ok) as (url, received, connections):
        client = RespClient(url.replace("://", "://svc:p%40ss@") + "/3")
        try:
            assert await client.execute("ECHO", "a") == "a"
            assert await client.execute("ECHO", "b") == "b"
        finally:
            await client.close()
    assert received == [["AUTH", "svc", "p@ss"], ["SELECT", "3"], ["ECHO", "a"], ["ECHO", "b"]]
    assert connections == [1]


async def test_a_refused_password_is_a_503_that_does_not_echo_it() -> None:
    refuse = reply_with(b"-WRONGPASS invalid username-password pair\r\n")
    async with fake_redis(refuse) as (url, _, _):
        client = RespClient(url.replace("://", "://:hunter2@"))
        with pytest.raises(ServiceUnavailable) as caught:
            await client.execute("PING")
        await client.close()
    assert "WRONGPASS" in str(caught.value) and "hunter2" not in str(caught.value)


async def test_a_dropped_connection_fails_the_call_and_the_next_call_reconnects() -> None:
    calls = 0

    async def hang_up_once(command: list[Any], writer: asyncio.StreamWriter) -> bool:
        nonlocal calls
        calls += 1
        if calls == 1:
            return False  # close without answering
        return await echo_ok(command, writer)

    async with fake_redis(hang_up_once) as (url, _, connections):
        client = RespClient(url, timeout_s=2)
        try:
            with pytest.raises(ServiceUnavailable):
                await client.execute("ECHO", "lost")
            assert await client.execute("ECHO", "found") == "found"
        finally:
            await client.close()
    assert connections == [2]


async def test_garbage_from_the_server_is_a_503_not_a_crash() -> None:
    async with fake_redis(reply_with(b"?this is not RESP\r\n")) as (url, _, _):
        client = RespClient(url, timeout_s=2)
        try:
            with pytest.raises(ServiceUnavailable, match="protocol"):
                await client.execute("PING")
        finally:
            await client.close()


async def test_a_late_reply_never_reaches_the_next_caller() -> None:
    calls = 0

    async def slow_first(command: list[Any], writer: asyncio.StreamWriter) -> bool:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(0.5)  # answered after the caller gave up
        return await echo_ok(command, writer)

    async with fake_redis(slow_first) as (url, _, _):
        client = RespClient(url, timeout_s=0.2)
        try:
            started = time.monotonic()
            with pytest.raises(ServiceUnavailable, match="no answer"):
                await client.execute("ECHO", "first")
            assert time.monotonic() - started < 2
            assert await client.execute("ECHO", "second") == "second"
        finally:
            await client.close()


async def test_nobody_listening_is_a_503() -> None:
    server = await asyncio.start_server(echo_ok_stream, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    client = RespClient(f"redis://127.0.0.1:{port}", timeout_s=2)
    with pytest.raises(ServiceUnavailable):
        await client.execute("PING")
    await client.close()


async def echo_ok_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()


def test_the_client_runs_on_uvloop_as_the_gateway_does(redis_url: str) -> None:
    # uvicorn serves the gateway on uvloop when it is installed; its transports are not asyncio's
    uvloop = pytest.importorskip("uvloop")

    async def scenario() -> list[Any]:
        client = RespClient(redis_url, timeout_s=2)
        try:
            script = RedisScript(f"-- {uuid.uuid4()}\nreturn ARGV[1]")
            replies = await asyncio.gather(*(client.execute("ECHO", str(i)) for i in range(50)))
            return [*replies, await client.evalsha(script, [], ["uv"])]
        finally:
            await client.close()

    assert uvloop.run(scenario()) == [*map(str, range(50)), "uv"]
