"""``gf security keys create|list|revoke|rotate`` and ``new-data-key``."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import SecretStr

from genai_factory.security.apikeys import APIKeyManager
from genai_factory.security.cli import security
from genai_factory.security.encryption import Keyring
from genai_factory.security.jwt_auth import JWTAuthenticator
from genai_factory.security.keystore import SQLiteAPIKeyStore
from genai_factory.security.tls import client_ssl_context, development_ca, issue_certificate
from genai_factory.shared.errors import ConfigError, NotFound, Unauthorized


@pytest.fixture
def env(tmp_path: Path, hash_secret: SecretStr) -> dict[str, str]:
    return {
        "GF_SECURITY_API_KEY_SECRET": hash_secret.get_secret_value(),
        "GF_SECURITY_KEY_STORE": str(tmp_path / "keys.db"),
    }


def verify(store_path: str, key: str, secret: SecretStr) -> str:
    async def check() -> str:
        store = SQLiteAPIKeyStore(store_path)
        try:
            return (await APIKeyManager(store, secret=secret).verify(key)).key_id
        finally:
            await store.close()

    return asyncio.run(check())


def test_create_list_rotate_revoke(
    env: dict[str, str], hash_secret: SecretStr, remember_secret: Callable[..., None]
) -> None:
    runner = CliRunner()
    created = runner.invoke(
        security,
        [
            "keys",
            "create",
            "--name",
            "ci",
            "--subject",
            "svc:ci",
            "--role",
            "invoker",
            "--scope",
            "model:invoke",
            "--ttl-days",
            "30",
        ],
        env=env,
    )
    assert created.exit_code == 0, created.output
    key = created.stdout.strip()
    remember_secret(key)
    assert key.startswith("gf-") and "shown once" in created.stderr and key not in created.stderr
    key_id = verify(env["GF_SECURITY_KEY_STORE"], key, hash_secret)

    listed = runner.invoke(security, ["keys", "list"], env=env)
    assert listed.exit_code == 0 and key_id in listed.stdout and "active" in listed.stdout
    assert key.split("_", 1)[1] not in listed.stdout
    as_json = [
        json.loads(line)
        for line in runner.invoke(security, ["keys", "list", "--json"], env=env).stdout.splitlines()
    ]
    assert as_json[0]["key_id"] == key_id and as_json[0]["roles"] == ["invoker"]
    assert "key_hash" not in as_json[0] and as_json[0]["expires_at"] != "-"
    assert (
        runner.invoke(security, ["keys", "list", "--subject", "nobody"], env=env).stdout.count("\n")
        == 1
    )

    rotated = runner.invoke(security, ["keys", "rotate", key_id, "--grace-hours", "0"], env=env)
    assert rotated.exit_code == 0, rotated.output
    new_key = rotated.stdout.strip()
    remember_secret(new_key)
    new_id = verify(env["GF_SECURITY_KEY_STORE"], new_key, hash_secret)
    with pytest.raises(Unauthorized, match="expired"):
        verify(env["GF_SECURITY_KEY_STORE"], key, hash_secret)

    revoked = runner.invoke(security, ["keys", "revoke", new_id], env=env)
    assert revoked.exit_code == 0 and f"revoked {new_id}" in revoked.stdout
    with pytest.raises(Unauthorized, match="revoked"):
        verify(env["GF_SECURITY_KEY_STORE"], new_key, hash_secret)


def test_errors_are_reported_not_hidden(env: dict[str, str]) -> None:
    runner = CliRunner()
    unknown = runner.invoke(security, ["keys", "revoke", "0" * 16], env=env)
    assert unknown.exit_code != 0 and isinstance(unknown.exception, NotFound)
    no_secret = {**env, "GF_SECURITY_API_KEY_SECRET": ""}
    missing = runner.invoke(
        security, ["keys", "create", "--name", "x", "--subject", "y"], env=no_secret
    )
    assert isinstance(missing.exception, ConfigError)


def test_new_data_key_prints_a_keyring_entry(remember_secret: Callable[..., None]) -> None:
    result = CliRunner().invoke(security, ["keys", "new-data-key", "--kid", "2025-03"])
    entry = result.stdout.strip()
    remember_secret(entry.split(":", 1)[1])
    assert Keyring.parse(entry).current == "2025-03"


def test_the_gf_command_has_the_security_plugin(
    env: dict[str, str], hash_secret: SecretStr, remember_secret: Callable[..., None]
) -> None:
    """The installed entry point, run as a user would."""
    gf = Path(sys.executable).parent / "gf"
    result = subprocess.run(
        [str(gf), "security", "keys", "create", "--name", "e2e", "--subject", "svc"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip()
    remember_secret(key)
    assert verify(env["GF_SECURITY_KEY_STORE"], key, hash_secret)
    failed = subprocess.run(
        [str(gf), "security", "keys", "revoke", "f" * 16],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert failed.returncode == 1 and "no API key with id" in failed.stderr


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_accounts_add_keeps_only_hashes(
    tmp_path: Path, env: dict[str, str], remember_secret: Callable[..., None]
) -> None:
    accounts = tmp_path / "accounts.json"
    runner = CliRunner()
    added = runner.invoke(
        security,
        [
            "accounts",
            "add",
            str(accounts),
            "--client-id",
            "batch",
            "--role",
            "invoker",
            "--scope",
            "model:invoke",
        ],
        env=env,
    )
    assert added.exit_code == 0, added.output
    secret = added.stdout.strip()
    remember_secret(secret)
    stored = json.loads(accounts.read_text())
    assert stored[0]["client_id"] == "batch" and secret not in accounts.read_text()
    assert accounts.stat().st_mode & 0o077 == 0
    again = runner.invoke(
        security, ["accounts", "add", str(accounts), "--client-id", "batch"], env=env
    )
    assert again.exit_code != 0
    accounts.write_text("{not json")
    broken = runner.invoke(
        security, ["accounts", "add", str(accounts), "--client-id", "x"], env=env
    )
    assert isinstance(broken.exception, ConfigError)


async def test_serve_tokens_over_tls_end_to_end(
    tmp_path: Path, env: dict[str, str], remember_secret: Callable[..., None]
) -> None:
    """`gf security serve-tokens` as a real process with TLS; a service account gets a token
    that the JWT authenticator verifies against the served JWKS."""
    ca = development_ca()
    cert, key, ca_file = issue_certificate(ca, "localhost", hosts=["127.0.0.1"]).write(
        tmp_path, "tls"
    )
    signing = ec.generate_private_key(ec.SECP256R1())
    signing_file = tmp_path / "signing.pem"
    signing_file.write_bytes(
        signing.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    remember_secret(signing_file.read_text())
    accounts = tmp_path / "accounts.json"
    added = CliRunner().invoke(
        security,
        ["accounts", "add", str(accounts), "--client-id", "batch", "--role", "invoker"],
        env=env,
    )
    client_secret = added.stdout.strip()
    remember_secret(client_secret)
    port = free_port()
    gf = Path(sys.executable).parent / "gf"
    command = [
        str(gf), "security", "serve-tokens", "--accounts", str(accounts), "--issuer", "https://auth.test",
        "--audience", "gf", "--kid", "t1", "--signing-key-file", str(signing_file), "--port", str(port),
        "--tls-cert", str(cert), "--tls-key", str(key),
    ]  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        *command, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    context = client_ssl_context(ca_file=str(ca_file))
    base = f"https://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(verify=context, base_url=base) as http:
            for _ in range(200):
                try:
                    await http.get("/.well-known/jwks.json")
                    break
                except httpx.TransportError:
                    assert process.returncode is None, "the token service exited early"
                    await asyncio.sleep(0.1)
            response = await http.post(
                "/oauth/token",
                data={"grant_type": "client_credentials"},
                auth=("batch", client_secret),
            )
        assert response.status_code == 200, response.text
        token = response.json()["access_token"]
        remember_secret(token)
        verifier = JWTAuthenticator(
            issuer="https://auth.test",
            audience="gf",
            jwks_url=f"{base}/.well-known/jwks.json",
            jwks_ca_file=str(ca_file),
            algorithms=("ES256",),
        )
        principal = await verifier.authenticate({"authorization": f"Bearer {token}"})
        await verifier.aclose()
        assert principal.subject == "batch" and principal.roles == {"invoker"}
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 10)
