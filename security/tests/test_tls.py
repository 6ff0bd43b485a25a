"""TLS helpers against real TLS servers on 127.0.0.1, with certificates minted at test time."""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import click
import httpx
import pytest
import uvicorn
from click.testing import CliRunner
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from genai_factory.security.tls import (
    CertificateBundle,
    TLSConfig,
    client_ssl_context,
    development_ca,
    issue_certificate,
    server_ssl_context,
    tls_options,
)
from genai_factory.shared.errors import ConfigError


class PKI:
    def __init__(self, root: Path, remember: Callable[..., None]) -> None:
        self.root = root
        self.ca = development_ca()
        self.other_ca = development_ca("someone else's CA")
        self.server = issue_certificate(self.ca, "localhost", hosts=["localhost", "127.0.0.1"])
        self.client = issue_certificate(self.ca, "batch-job", client=True)
        self.stranger = issue_certificate(self.other_ca, "stranger", client=True)
        for bundle in (self.ca, self.other_ca, self.server, self.client, self.stranger):
            remember(bundle.key_pem.decode())

    def files(self, bundle: CertificateBundle, name: str) -> tuple[str, str, str]:
        cert, key, ca = bundle.write(self.root, name)
        return str(cert), str(key), str(ca)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory, log_capture: Any) -> PKI:
    return PKI(tmp_path_factory.mktemp("pki"), log_capture.remember)


@pytest.fixture
async def echo_server(
    pki: PKI, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[int, list[Any]]]:
    """A TLS echo server on 127.0.0.1; ``require_client_cert`` comes from the test's param."""
    require = getattr(request, "param", False)
    cert, key, ca = pki.files(pki.server, "server")
    context = server_ssl_context(
        cert, key, client_ca_file=ca if require else None, require_client_cert=require
    )
    peers: list[Any] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            peers.append(writer.get_extra_info("peercert"))
            data = await reader.readline()
            writer.write(b"echo:" + data)
            await writer.drain()
        except (ssl.SSLError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    yield port, peers
    server.close()
    await server.wait_closed()


async def talk(port: int, context: ssl.SSLContext, host: str = "localhost") -> bytes:
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname=host), 5
    )
    try:
        writer.write(b"hello\n")
        await writer.drain()
        return await asyncio.wait_for(reader.readline(), 5)
    finally:
        writer.close()


async def talk_or_fail(port: int, context: ssl.SSLContext) -> bytes:
    """Like talk(), but an empty answer (how TLS 1.3 can deliver a refusal) is an error."""
    answer = await talk(port, context)
    if not answer:
        raise ConnectionError("closed without an answer")
    return answer


async def test_a_client_trusting_the_ca_talks_to_the_server(pki: PKI, echo_server: Any) -> None:
    port, _ = echo_server
    _, _, ca = pki.files(pki.server, "server")
    assert await talk(port, client_ssl_context(ca_file=ca)) == b"echo:hello\n"


async def test_an_untrusted_server_or_wrong_host_is_refused(pki: PKI, echo_server: Any) -> None:
    port, _ = echo_server
    _, _, other_ca = pki.files(pki.stranger, "stranger")
    with pytest.raises(ssl.SSLCertVerificationError):
        await talk(port, client_ssl_context(ca_file=other_ca))
    _, _, ca = pki.files(pki.server, "server")
    with pytest.raises(ssl.SSLCertVerificationError, match=r"match"):
        await talk(port, client_ssl_context(ca_file=ca), host="api.example.com")


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
async def test_old_protocol_versions_are_refused(pki: PKI, echo_server: Any) -> None:
    port, _ = echo_server
    _, _, ca = pki.files(pki.server, "server")
    old = client_ssl_context(ca_file=ca)
    old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await talk(port, old)


@pytest.mark.parametrize("echo_server", [True], indirect=True)
async def test_mutual_tls(pki: PKI, echo_server: Any) -> None:
    port, peers = echo_server
    _, _, ca = pki.files(pki.server, "server")
    cert, key, _ = pki.files(pki.client, "client")
    assert (
        await talk(port, client_ssl_context(ca_file=ca, cert_file=cert, key_file=key))
        == b"echo:hello\n"
    )
    subject = dict(item[0] for item in peers[-1]["subject"])
    assert subject["commonName"] == "batch-job"
    # no client certificate, or one from another CA: the handshake fails
    s_cert, s_key, _ = pki.files(pki.stranger, "stranger")
    for context in (
        client_ssl_context(ca_file=ca),
        client_ssl_context(ca_file=ca, cert_file=s_cert, key_file=s_key),
    ):
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await talk_or_fail(port, context)


def test_configuration_mistakes_are_config_errors(pki: PKI, tmp_path: Path) -> None:
    cert, key, ca = pki.files(pki.server, "server")
    _, other_key, _ = pki.files(pki.client, "client")
    with pytest.raises(ConfigError, match="not found"):
        server_ssl_context(str(tmp_path / "missing.crt"), key)
    with pytest.raises(ConfigError, match="cannot load"):
        server_ssl_context(cert, other_key)  # key does not match the certificate
    with pytest.raises(ConfigError, match="client CA"):
        server_ssl_context(cert, key, require_client_cert=True)
    with pytest.raises(ConfigError, match="both"):
        client_ssl_context(cert_file=cert)
    with pytest.raises(ConfigError, match="both"):
        TLSConfig(cert_file=cert).server_context()
    assert TLSConfig().server_context() is None and TLSConfig().uvicorn_kwargs() == {}
    mtls = TLSConfig(cert_file=cert, key_file=key, client_ca_file=ca, require_client_cert=True)
    assert mtls.enabled
    assert mtls.uvicorn_kwargs()["ssl_cert_reqs"] == ssl.CERT_REQUIRED
    optional = TLSConfig(cert_file=cert, key_file=key, client_ca_file=ca)
    assert optional.server_context().verify_mode == ssl.CERT_OPTIONAL  # type: ignore[union-attr]


def test_the_click_options_build_a_tls_config(pki: PKI) -> None:
    cert, key, _ = pki.files(pki.server, "server")
    seen: list[TLSConfig] = []

    @click.command()
    @tls_options
    def serve(tls: TLSConfig) -> None:
        seen.append(tls)

    runner = CliRunner()
    assert runner.invoke(serve, ["--tls-cert", cert, "--tls-key", key]).exit_code == 0
    assert seen[-1].cert_file == cert and seen[-1].key_file == key
    assert runner.invoke(serve, []).exit_code == 0 and not seen[-1].enabled
    result = runner.invoke(serve, ["--tls-cert", cert])
    assert result.exit_code != 0 and isinstance(result.exception, ConfigError)


def test_private_keys_are_written_owner_only(pki: PKI, tmp_path: Path) -> None:
    _, key, _ = pki.client.write(tmp_path, "c")
    assert key.stat().st_mode & 0o077 == 0
    assert "PRIVATE" not in repr(pki.client)


class HTTPSServer:
    def __init__(self, tls: TLSConfig) -> None:
        async def hello(request: Request) -> PlainTextResponse:
            peer = request.scope.get("extensions", {}).get("tls", {})
            return PlainTextResponse(f"hello over {request.url.scheme} {bool(peer)}")

        app = Starlette(routes=[Route("/", hello)])
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            log_level="warning",
            lifespan="off",
            **tls.uvicorn_kwargs(),
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> int:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return int(self.server.servers[0].sockets[0].getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def https_port(pki: PKI) -> Iterator[int]:
    cert, key, ca = pki.files(pki.server, "server")
    tls = TLSConfig(cert_file=cert, key_file=key, client_ca_file=ca, require_client_cert=True)
    with HTTPSServer(tls) as port:
        yield port


async def test_uvicorn_serves_https_with_mtls_from_the_config(pki: PKI, https_port: int) -> None:
    _, _, ca = pki.files(pki.server, "server")
    cert, key, _ = pki.files(pki.client, "client")
    context = client_ssl_context(ca_file=ca, cert_file=cert, key_file=key)
    async with httpx.AsyncClient(verify=context) as http:
        response = await http.get(f"https://127.0.0.1:{https_port}/")
    assert response.text.startswith("hello over https")
    async with httpx.AsyncClient(verify=client_ssl_context(ca_file=ca)) as http:
        with pytest.raises(httpx.HTTPError):
            await http.get(f"https://127.0.0.1:{https_port}/")
