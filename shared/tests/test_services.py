"""The real-service fixtures: against the real Redis, PostgreSQL and RabbitMQ of this machine."""

from __future__ import annotations

import asyncio

import pytest

from genai_factory.shared.testing import services

pytestmark = pytest.mark.integration


async def test_redis_namespace_is_real_and_isolated(redis_url: str, redis_namespace: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url)
    try:
        await client.set(f"{redis_namespace}k", "v")
        assert await client.get(f"{redis_namespace}k") == b"v"
        assert await client.incrby(f"{redis_namespace}n", 5) == 5
    finally:
        await client.aclose()


def test_postgres_schema_is_real_and_isolated(postgres_schema_dsn: str) -> None:
    import psycopg

    with psycopg.connect(postgres_schema_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE spend (id serial PRIMARY KEY, usd numeric NOT NULL)")
        conn.execute("INSERT INTO spend (usd) VALUES (0.25), (0.5)")
        row = conn.execute("SELECT sum(usd), current_schema() FROM spend").fetchone()
    assert row is not None
    assert float(row[0]) == 0.75
    assert row[1].startswith("gftest_")


async def test_rabbitmq_round_trip(rabbitmq_url: str) -> None:
    import aio_pika

    connection = await aio_pika.connect_robust(rabbitmq_url, timeout=5)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
        await channel.default_exchange.publish(
            aio_pika.Message(body=b"ping"), routing_key=queue.name
        )
        message = await asyncio.wait_for(queue.get(timeout=5), timeout=10)
        assert message is not None
        await message.ack()
        assert message.body == b"ping"


@pytest.mark.parametrize("name", ["redis", "postgres", "rabbitmq"])
def test_an_absent_service_skips_or_fails_when_required(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    env_var, _ = services.DEFAULT_URLS[name]
    scheme = {"redis": "redis", "postgres": "postgresql", "rabbitmq": "amqp"}[name]
    # port 9 (discard) on loopback: nothing listens there on these machines
    monkeypatch.setenv(env_var, f"{scheme}://u@127.0.0.1:9/x")
    monkeypatch.delenv("REQUIRE_SERVICES", raising=False)
    with pytest.raises(pytest.skip.Exception, match="not available"):
        services.require_service(name)
    monkeypatch.setenv("REQUIRE_SERVICES", "1")
    with pytest.raises(pytest.fail.Exception, match="REQUIRE_SERVICES=1"):
        services.require_service(name)


def test_a_non_amqp_server_is_not_mistaken_for_rabbitmq(redis_url: str) -> None:
    with pytest.raises(services.ServiceUnavailableForTest):
        services.probe_amqp("amqp://127.0.0.1:6379/")
