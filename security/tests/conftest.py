"""Fixtures for the security suite: a log capture that every secret is checked against, keys,
and real HTTP servers on 127.0.0.1 (a JWKS endpoint, a Vault KV v2 stand-in)."""

from __future__ import annotations

import base64
import json
import logging
import secrets
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from pydantic import SecretStr

HASH_SECRET = "test-hash-secret-" + "x" * 24  # 41 bytes: above the 32-byte minimum


# ----------------------------------------------------------------------------- log capture


class CapturingHandler(logging.Handler):
    """Keeps every record it sees (once, even when it reaches it through two loggers)."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._seen: set[int] = set()

    def emit(self, record: logging.LogRecord) -> None:
        if id(record) not in self._seen:
            self._seen.add(id(record))
            self.records.append(record)


def record_text(record: logging.LogRecord) -> str:
    """Everything a handler could write for ``record``: message, extras, exception, stack."""
    parts = [record.getMessage(), str(record.msg)]
    standard = vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None))
    parts.extend(f"{k}={v!r}" for k, v in vars(record).items() if k not in standard)
    if record.exc_info:
        parts.append(logging.Formatter().formatException(record.exc_info))
    if record.exc_text:
        parts.append(record.exc_text)
    if record.stack_info:
        parts.append(record.stack_info)
    return "\n".join(parts)


def find_leaks(records: list[logging.LogRecord], secrets: set[str]) -> list[str]:
    """'logger: secret prefix...' for every record that contains a known secret value."""
    leaks = []
    for record in records:
        text = record_text(record)
        for secret in secrets:
            if secret and secret in text:
                leaks.append(f"{record.name}: {secret[:6]}... in {record.getMessage()[:80]!r}")
    return leaks


@dataclass
class LogCapture:
    handler: CapturingHandler
    secrets: set[str] = field(default_factory=set)

    def remember(self, *values: str | bytes | SecretStr) -> None:
        """Register secret values the suite created; no log record may ever contain them."""
        for value in values:
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            if isinstance(value, bytes):
                self.secrets.add(base64.b64encode(value).decode())
                self.secrets.add(base64.urlsafe_b64encode(value).decode().rstrip("="))
                self.secrets.add(value.hex())
                continue
            if len(value) >= 8:
                self.secrets.add(value)

    def leaks(self) -> list[str]:
        return find_leaks(self.handler.records, self.secrets)


@pytest.fixture(scope="session", autouse=True)
def log_capture() -> Iterator[LogCapture]:
    """Every record emitted during the suite, at DEBUG, from genai_factory and the root logger."""
    handler = CapturingHandler()
    watched = [logging.getLogger("genai_factory"), logging.getLogger()]
    saved = [(logger, logger.level) for logger in watched]
    for logger in watched:
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    capture = LogCapture(handler)
    capture.remember(HASH_SECRET)
    yield capture
    for logger, level in saved:
        logger.removeHandler(handler)
        logger.setLevel(level)
    leaks = capture.leaks()
    assert not leaks, f"secrets reached log records: {leaks}"


@pytest.fixture
def remember_secret(log_capture: LogCapture) -> Callable[..., None]:
    return log_capture.remember


# ----------------------------------------------------------------------------- keys


@pytest.fixture(scope="session")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="session")
def ed_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


@pytest.fixture
def hash_secret(remember_secret: Callable[..., None]) -> SecretStr:
    return SecretStr(HASH_SECRET)


# ----------------------------------------------------------------------------- HTTP servers


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # a client hanging up mid-response (the oversized-JWKS test does) is not a server bug
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class LoopbackServer:
    """A ThreadingHTTPServer on 127.0.0.1 and a free port, run in a daemon thread."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.httpd = _Server(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.httpd.owner = self  # type: ignore[attr-defined]
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> LoopbackServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


class _QuietHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like a real server

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        return

    def _json(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@dataclass
class JWKSState:
    document: dict[str, Any] = field(default_factory=lambda: {"keys": []})
    status: int = 200
    hits: int = 0
    raw: bytes | None = None


class _JWKSHandler(_QuietHandler):
    def do_GET(self) -> None:
        state: JWKSState = self.server.owner.state  # type: ignore[attr-defined]
        state.hits += 1
        if urlsplit(self.path).path != "/jwks.json":
            self._json(404, {"error": "not found"})
        elif state.raw is not None:
            self.send_response(state.status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(state.raw)))
            self.end_headers()
            self.wfile.write(state.raw)
        else:
            self._json(state.status, state.document)


class JWKSServer(LoopbackServer):
    def __init__(self) -> None:
        super().__init__(_JWKSHandler)
        self.state = JWKSState()

    @property
    def jwks_url(self) -> str:
        return f"{self.url}/jwks.json"


@pytest.fixture
def jwks_server() -> Iterator[JWKSServer]:
    """A real JWKS endpoint on 127.0.0.1; tests set ``state.document`` and read ``state.hits``."""
    with JWKSServer() as server:
        yield server


# -- a Vault KV v2 stand-in: the wire protocol hvac speaks (data, metadata, list, token header)


@dataclass
class VaultState:
    token: str
    mount: str = "secret"
    # path -> list of versions (each {"data": {...}, "created_time": ..., "deleted": bool})
    secrets: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)


class _VaultHandler(_QuietHandler):
    def _state(self) -> VaultState:
        return self.server.owner.state  # type: ignore[attr-defined, no-any-return]

    def _route(self) -> tuple[str, str, dict[str, list[str]]] | None:
        """(kind 'data'|'metadata', secret path, query) or None after answering an error."""
        state = self._state()
        parts = urlsplit(self.path)
        state.requests.append((self.command, parts.path))
        if self.headers.get("X-Vault-Token") != state.token:
            self._json(403, {"errors": ["permission denied"]})
            return None
        prefix = f"/v1/{state.mount}/"
        if not parts.path.startswith(prefix):
            self._json(404, {"errors": []})
            return None
        kind, _, path = parts.path[len(prefix) :].partition("/")
        if kind not in ("data", "metadata"):
            self._json(404, {"errors": []})
            return None
        return kind, path, parse_qs(parts.query)

    def _body(self) -> Any:
        length = int(self.headers.get("content-length") or 0)
        return json.loads(self.rfile.read(length) or b"{}")

    def _metadata(self, path: str) -> dict[str, Any]:
        versions = self._state().secrets[path]
        return {
            "current_version": len(versions),
            "versions": {
                str(i + 1): {"created_time": v["created_time"], "destroyed": False}
                for i, v in enumerate(versions)
            },
        }

    def do_GET(self) -> None:
        route = self._route()
        if route is None:
            return
        kind, path, query = route
        state = self._state()
        if kind == "metadata" and query.get("list") == ["true"]:
            self._list(path)
            return
        versions = state.secrets.get(path)
        if not versions:
            self._json(404, {"errors": []})
            return
        if kind == "metadata":
            self._json(200, {"data": self._metadata(path)})
            return
        number = int(query.get("version", [len(versions)])[0])
        if not 1 <= number <= len(versions) or versions[number - 1]["deleted"]:
            self._json(404, {"errors": []})
            return
        version = versions[number - 1]
        self._json(
            200,
            {
                "data": {
                    "data": version["data"],
                    "metadata": {"version": number, "created_time": version["created_time"]},
                }
            },
        )

    def _list(self, path: str) -> None:
        prefix = path.rstrip("/") + "/" if path else ""
        names = sorted(
            {
                p[len(prefix) :].split("/")[0] + ("/" if "/" in p[len(prefix) :] else "")
                for p in self._state().secrets
                if p.startswith(prefix)
            }
        )
        if not names:
            self._json(404, {"errors": []})
        else:
            self._json(200, {"data": {"keys": names}})

    def do_LIST(self) -> None:
        route = self._route()
        if route is not None:
            self._list(route[1])

    def do_POST(self) -> None:
        route = self._route()
        if route is None:
            return
        kind, path, _ = route
        body = self._body()
        if kind != "data" or not isinstance(body.get("data"), dict):
            self._json(400, {"errors": ["no data provided"]})
            return
        versions = self._state().secrets.setdefault(path, [])
        cas = (body.get("options") or {}).get("cas")
        if cas is not None and cas != len(versions):
            self._json(400, {"errors": ["check-and-set parameter did not match"]})
            return
        versions.append({"data": body["data"], "created_time": time.time(), "deleted": False})
        self._json(200, {"data": {"version": len(versions)}})

    def do_PUT(self) -> None:
        self.do_POST()

    def do_DELETE(self) -> None:
        route = self._route()
        if route is None:
            return
        kind, path, _ = route
        state = self._state()
        if kind == "metadata":
            state.secrets.pop(path, None)
        elif path in state.secrets:
            state.secrets[path][-1]["deleted"] = True
        self.send_response(204)
        self.send_header("content-length", "0")
        self.end_headers()


class VaultServer(LoopbackServer):
    def __init__(self, token: str) -> None:
        super().__init__(_VaultHandler)
        self.state = VaultState(token=token)


@pytest.fixture
def vault_server(remember_secret: Callable[..., None]) -> Iterator[VaultServer]:
    """A KV v2 server on 127.0.0.1 that checks X-Vault-Token like Vault does."""
    token = "hvs." + secrets.token_urlsafe(18)
    remember_secret(token)
    with VaultServer(token) as server:
        yield server


@pytest.fixture
def leak_scanner() -> Callable[[list[logging.LogRecord], set[str]], list[str]]:
    """The function the session check uses, for tests that prove it catches a leak."""
    return find_leaks
