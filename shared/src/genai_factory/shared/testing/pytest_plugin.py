"""pytest fixtures for real Redis, PostgreSQL and RabbitMQ, each isolated per test."""

from __future__ import annotations

import uuid
from collections.abc import Generator, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from genai_factory.shared.testing.services import require_service, service_url


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


# ------------------------------------------------------------------ which real services were used

_SERVICE_OF_FIXTURE = {
    "redis_url": "redis",
    "redis_namespace": "redis",
    "postgres_dsn": "postgres",
    "postgres_schema_dsn": "postgres",
    "rabbitmq_url": "rabbitmq",
}
_PASSED_AGAINST: pytest.StashKey[dict[str, set[str]]] = pytest.StashKey()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if call.when == "call" and report.passed:
        used = item.config.stash.setdefault(_PASSED_AGAINST, {})
        for fixture in getattr(item, "fixturenames", ()):
            if fixture in _SERVICE_OF_FIXTURE:
                used.setdefault(_SERVICE_OF_FIXTURE[fixture], set()).add(item.nodeid)
    return report


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """Say which real services the run's tests passed against (CI logs show it)."""
    used = config.stash.get(_PASSED_AGAINST, {})
    if not used:
        return
    terminalreporter.section("real services")
    for service in sorted(used):
        address = urlsplit(service_url(service))
        terminalreporter.write_line(
            f"{service}: {len(used[service])} tests passed against "
            f"{address.scheme}://{address.hostname}:{address.port}"
        )
