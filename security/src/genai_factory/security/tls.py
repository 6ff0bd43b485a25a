"""TLS: server contexts from ``--tls-cert``/``--tls-key`` (optionally requiring client
certificates), client contexts for upstreams (optionally presenting one: mTLS), and
development helpers that mint a CA and certificates with ``cryptography``.

Both sides refuse anything below TLS 1.2; client contexts always check the certificate chain and
the host name.

Example:
    >>> import tempfile, pathlib
    >>> from genai_factory.security.tls import (
    ...     client_ssl_context, development_ca, issue_certificate, server_ssl_context)
    >>> ca = development_ca()
    >>> leaf = issue_certificate(ca, "localhost", hosts=["localhost", "127.0.0.1"])
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     cert, key, ca_file = leaf.write(pathlib.Path(tmp), "server")
    ...     server = server_ssl_context(str(cert), str(key))
    ...     client = client_ssl_context(ca_file=str(ca_file))
    >>> server.minimum_version.name, client.check_hostname
    ('TLSv1_2', True)
"""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
import os
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import click
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pydantic import BaseModel, ConfigDict

from genai_factory.shared.errors import ConfigError

__all__ = [
    "CertificateBundle",
    "TLSConfig",
    "client_ssl_context",
    "development_ca",
    "issue_certificate",
    "server_ssl_context",
    "tls_options",
]

F = TypeVar("F", bound=Callable[..., Any])


def _check_file(path: str | None, what: str) -> None:
    if path is not None and not Path(path).is_file():
        raise ConfigError(f"{what} file not found: {path}", param=what)


def server_ssl_context(
    cert_file: str,
    key_file: str,
    *,
    client_ca_file: str | None = None,
    require_client_cert: bool = False,
) -> ssl.SSLContext:
    """A server context; with ``client_ca_file`` it verifies client certificates (required when
    ``require_client_cert``, else optional)."""
    _check_file(cert_file, "tls-cert")
    _check_file(key_file, "tls-key")
    _check_file(client_ca_file, "tls-client-ca")
    if require_client_cert and client_ca_file is None:
        raise ConfigError(
            "requiring client certificates needs a client CA file", param="tls-client-ca"
        )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert_file, key_file)
    except ssl.SSLError as exc:
        raise ConfigError(
            f"cannot load the TLS certificate and key ({exc.reason or 'mismatch'})",
            param="tls-cert",
        ) from None
    if client_ca_file is not None:
        context.load_verify_locations(cafile=client_ca_file)
        context.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    return context


def client_ssl_context(
    *,
    ca_file: str | None = None,
    cert_file: str | None = None,
    key_file: str | None = None,
) -> ssl.SSLContext:
    """A client context for calling upstreams: system CAs (or ``ca_file``), host name checks,
    TLS 1.2+, and a client certificate for mTLS when ``cert_file``/``key_file`` are given."""
    _check_file(ca_file, "ca-file")
    _check_file(cert_file, "cert-file")
    _check_file(key_file, "key-file")
    if (cert_file is None) != (key_file is None):
        raise ConfigError("mTLS needs both a client certificate and its key", param="cert-file")
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_file is not None and key_file is not None:
        context.load_cert_chain(cert_file, key_file)
    return context


class TLSConfig(BaseModel):
    """TLS settings for a service, as they appear in config files."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cert_file: str | None = None
    key_file: str | None = None
    client_ca_file: str | None = None
    require_client_cert: bool = False

    @property
    def enabled(self) -> bool:
        return self.cert_file is not None

    def server_context(self) -> ssl.SSLContext | None:
        """The server context, or None when TLS is off (no certificate configured)."""
        if self.cert_file is None and self.key_file is None:
            return None
        if self.cert_file is None or self.key_file is None:
            raise ConfigError("TLS needs both --tls-cert and --tls-key", param="tls-cert")
        return server_ssl_context(
            self.cert_file,
            self.key_file,
            client_ca_file=self.client_ca_file,
            require_client_cert=self.require_client_cert,
        )

    def uvicorn_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``uvicorn.run``/``uvicorn.Config`` (empty when TLS is off)."""
        if self.server_context() is None:
            return {}
        kwargs: dict[str, Any] = {"ssl_certfile": self.cert_file, "ssl_keyfile": self.key_file}
        if self.client_ca_file:
            kwargs["ssl_ca_certs"] = self.client_ca_file
            kwargs["ssl_cert_reqs"] = (
                ssl.CERT_REQUIRED if self.require_client_cert else ssl.CERT_OPTIONAL
            )
        return kwargs


def tls_options(command: F) -> F:
    """Adds ``--tls-cert``, ``--tls-key``, ``--tls-client-ca`` and ``--tls-require-client-cert``
    to a click command; it receives them as one ``tls: TLSConfig`` argument."""

    options = [
        click.option(
            "--tls-cert",
            type=click.Path(dir_okay=False),
            default=None,
            help="PEM certificate chain",
        ),
        click.option(
            "--tls-key", type=click.Path(dir_okay=False), default=None, help="PEM private key"
        ),
        click.option(
            "--tls-client-ca",
            type=click.Path(dir_okay=False),
            default=None,
            help="CA bundle that client certificates must chain to (mTLS)",
        ),
        click.option(
            "--tls-require-client-cert/--no-tls-require-client-cert",
            default=False,
            help="refuse clients without a certificate",
        ),
    ]

    @functools.wraps(command)
    def wrapper(
        *args: Any,
        tls_cert: str | None,
        tls_key: str | None,
        tls_client_ca: str | None,
        tls_require_client_cert: bool,
        **kwargs: Any,
    ) -> Any:
        tls = TLSConfig(
            cert_file=tls_cert,
            key_file=tls_key,
            client_ca_file=tls_client_ca,
            require_client_cert=tls_require_client_cert,
        )
        tls.server_context()  # fail fast, with the reason, before anything starts
        return command(*args, tls=tls, **kwargs)

    decorated: Any = wrapper
    for option in reversed(options):
        decorated = option(decorated)
    return decorated  # type: ignore[no-any-return]


# ----------------------------------------------------------------------------- development PKI


@dataclass(frozen=True)
class CertificateBundle:
    """A certificate, its private key and the CA certificate that signed it (PEM)."""

    certificate_pem: bytes
    key_pem: bytes = field(repr=False)
    ca_pem: bytes
    private_key: Any = field(repr=False, default=None)
    certificate: Any = field(repr=False, default=None)

    def write(self, directory: Path, name: str) -> tuple[Path, Path, Path]:
        """Write ``name.crt``, ``name.key`` (mode 0600) and ``name-ca.crt``; return the paths."""
        directory.mkdir(parents=True, exist_ok=True)
        cert, key, ca = (
            directory / f"{name}.crt",
            directory / f"{name}.key",
            directory / f"{name}-ca.crt",
        )
        cert.write_bytes(self.certificate_pem)
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(self.key_pem)
        ca.write_bytes(self.ca_pem)
        return cert, key, ca


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "GenAI Factory (development)"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def development_ca(
    common_name: str = "GenAI Factory development CA", days: int = 30
) -> CertificateBundle:
    """A throwaway certificate authority (P-256) for tests and local development only."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    pem = certificate.public_bytes(serialization.Encoding.PEM)
    return CertificateBundle(pem, _key_pem(key), pem, private_key=key, certificate=certificate)


def issue_certificate(
    ca: CertificateBundle,
    common_name: str,
    *,
    hosts: Sequence[str] = (),
    client: bool = False,
    days: int = 30,
) -> CertificateBundle:
    """A leaf certificate signed by ``ca``: for a server (``hosts`` become subject alternative
    names) or, with ``client=True``, for a client presenting it in mTLS."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.private_key.public_key()),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]
            ),
            critical=False,
        )
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    certificate = builder.sign(ca.private_key, hashes.SHA256())
    return CertificateBundle(
        certificate.public_bytes(serialization.Encoding.PEM),
        _key_pem(key),
        ca.certificate_pem,
        private_key=key,
        certificate=certificate,
    )
