"""Probe real services and decide: use them, skip with a reason, or fail because CI requires them."""

from __future__ import annotations

import os
import socket
import struct
from urllib.parse import urlsplit

import pytest

__all__ = [
    "DEFAULT_URLS",
    "ServiceUnavailableForTest",
    "probe_amqp",
    "probe_postgres",
    "probe_redis",
    "require_service",
    "service_url",
    "services_required",
]

# Where the services run on the project's machines (see ../shared/SERVICES.md); override with env.
DEFAULT_URLS = {
    "redis": ("GF_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
    "postgres": ("GF_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test"),
    "rabbitmq": ("GF_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/"),
}


class ServiceUnavailableForTest(RuntimeError):
    """A probe could not reach the service or it did not speak its protocol."""


def services_required() -> bool:
    """True under CI (``REQUIRE_SERVICES=1``): an absent service is then a failure, not a skip."""
    return os.environ.get("REQUIRE_SERVICES", "").strip().lower() in {"1", "true", "yes"}


def service_url(name: str) -> str:
    env_var, default = DEFAULT_URLS[name]
    return os.environ.get(env_var, default)


def probe_redis(url: str, timeout: float = 2.0) -> None:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        try:
            if not client.ping():
                raise ServiceUnavailableForTest(f"Redis at {url} did not answer PING")
        finally:
            client.close()
    except redis.RedisError as exc:
        raise ServiceUnavailableForTest(f"Redis at {url}: {exc}") from None


def probe_postgres(dsn: str, timeout: float = 3.0) -> None:
    import psycopg

    try:
        with psycopg.connect(dsn, connect_timeout=max(1, int(timeout))) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        raise ServiceUnavailableForTest(f"PostgreSQL at {dsn}: {exc}".strip()) from None


def probe_amqp(url: str, timeout: float = 2.0) -> None:
    """Send the AMQP 0-9-1 protocol header and expect the broker's Connection.Start frame."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 5672
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"AMQP\x00\x00\x09\x01")
            header = sock.recv(7)
            payload = sock.recv(4)
    except OSError as exc:
        raise ServiceUnavailableForTest(f"RabbitMQ at {host}:{port}: {exc}") from None
    if len(header) < 7 or len(payload) < 4 or header[0] != 1:
        raise ServiceUnavailableForTest(f"{host}:{port} does not speak AMQP 0-9-1")
    class_id, method_id = struct.unpack(">HH", payload)
    if (class_id, method_id) != (10, 10):
        raise ServiceUnavailableForTest(f"{host}:{port} answered an unexpected AMQP frame")


_PROBES = {"redis": probe_redis, "postgres": probe_postgres, "rabbitmq": probe_amqp}


def require_service(name: str) -> str:
    """The service's URL if it answers; otherwise skip the test (or fail it when required)."""
    url = service_url(name)
    try:
        _PROBES[name](url)
    except ServiceUnavailableForTest as exc:
        reason = f"{name} not available ({exc}); set {DEFAULT_URLS[name][0]} to point at one"
        if services_required():
            pytest.fail(f"REQUIRE_SERVICES=1 but {reason}", pytrace=False)
        pytest.skip(reason)
    return url
