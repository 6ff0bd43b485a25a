"""pytest fixtures for real Redis, PostgreSQL and RabbitMQ, each isolated per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from genai_factory.shared.testing.services import require_service


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A reachable Redis URL (skips, or fails under REQUIRE_SERVICES=1, when there is none)."""
    return require_service("redis")


@pytest.fixture
def redis_namespace(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; every key under it is deleted afterwards."""
    import redis

    prefix = f"gftest:{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=500))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    """A reachable PostgreSQL DSN (skips, or fails under REQUIRE_SERVICES=1, when there is none)."""
    return require_service("postgres")


@pytest.fixture
def postgres_schema_dsn(postgres_dsn: str) -> Iterator[str]:
    """A DSN whose search_path is a fresh schema, dropped with everything in it afterwards."""
    import psycopg

    schema = f"gftest_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    separator = "&" if "?" in postgres_dsn else "?"
    yield f"{postgres_dsn}{separator}options=-csearch_path%3D{schema}"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(scope="session")
def rabbitmq_url() -> str:
    """A reachable RabbitMQ AMQP URL (skips, or fails under REQUIRE_SERVICES=1, when there is none)."""
    return require_service("rabbitmq")
