"""``gf security``: API keys (create, list, revoke, rotate), encryption keys, service accounts
and the OAuth2 token service.

The key store is ``--store`` (a SQLite path or a ``postgresql://`` DSN; default
``$GF_SECURITY_KEY_STORE`` or ``.gf-data/api-keys.db``); the hashing secret comes from
``$GF_SECURITY_API_KEY_SECRET``. A new key or client secret is printed once, on stdout, and never
again.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import click

from genai_factory.security.apikeys import APIKeyManager
from genai_factory.security.encryption import new_key_entry
from genai_factory.security.keystore import APIKeyRecord, open_key_store
from genai_factory.security.tls import TLSConfig, tls_options
from genai_factory.shared.errors import ConfigError

__all__ = ["security"]

T = TypeVar("T")
DEFAULT_STORE = ".gf-data/api-keys.db"
STORE_ENV = "GF_SECURITY_KEY_STORE"


def _run(store_url: str, work: Callable[[APIKeyManager], Awaitable[T]]) -> T:
    async def main() -> T:
        store = open_key_store(store_url)
        try:
            return await work(APIKeyManager(store))
        finally:
            await store.close()

    return asyncio.run(main())


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _public(record: APIKeyRecord, now: float) -> dict[str, Any]:
    """Everything about a key that may be shown: never its hash."""
    return {
        "key_id": record.key_id,
        "name": record.name,
        "subject": record.subject,
        "org_id": record.org_id,
        "team_id": record.team_id,
        "user_id": record.user_id,
        "roles": list(record.roles),
        "scopes": list(record.scopes),
        "status": record.status(now),
        "created_at": _when(record.created_at),
        "expires_at": _when(record.expires_at),
        "revoked_at": _when(record.revoked_at),
        "replaced_by": record.replaced_by,
    }


store_option = click.option(
    "--store",
    "store_url",
    default=lambda: os.environ.get(STORE_ENV, DEFAULT_STORE),
    show_default=f"${STORE_ENV} or {DEFAULT_STORE}",
    help="SQLite path or postgresql:// DSN of the key store",
)


@click.group("security")
def security() -> None:
    """Security: API keys, encryption keys, service accounts and the token service."""


@security.group("keys")
def keys() -> None:
    """Create, list, revoke and rotate API keys (hashing secret: $GF_SECURITY_API_KEY_SECRET)."""


@keys.command("create")
@click.option("--name", required=True, help="what the key is for, e.g. 'ci pipeline'")
@click.option("--subject", required=True, help="who the key acts for (user id or service name)")
@click.option("--org", "org_id", default=None)
@click.option("--team", "team_id", default=None)
@click.option("--user", "user_id", default=None)
@click.option("--role", "roles", multiple=True, help="a role (repeat for several)")
@click.option("--scope", "scopes", multiple=True, help="a scope such as model:invoke (repeat)")
@click.option("--ttl-days", type=click.FloatRange(min=0, min_open=True), default=None)
@store_option
def create_command(
    name: str,
    subject: str,
    org_id: str | None,
    team_id: str | None,
    user_id: str | None,
    roles: tuple[str, ...],
    scopes: tuple[str, ...],
    ttl_days: float | None,
    store_url: str,
) -> None:
    """Issue a key and print it once."""
    issued = _run(
        store_url,
        lambda manager: manager.create(
            name,
            subject=subject,
            org_id=org_id,
            team_id=team_id,
            user_id=user_id,
            roles=roles,
            scopes=scopes,
            ttl_s=None if ttl_days is None else ttl_days * 86_400,
        ),
    )
    click.echo(issued.key)
    click.echo(
        f"key id {issued.key_id}: shown once, store it now (expires {_when(issued.record.expires_at)})",
        err=True,
    )


@keys.command("list")
@click.option("--subject", default=None, help="only this subject's keys")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per key")
@store_option
def list_command(subject: str | None, as_json: bool, store_url: str) -> None:
    """List keys (ids, owners, status; never the keys or their hashes)."""
    import time

    records = _run(store_url, lambda manager: manager.list(subject))
    now = time.time()
    if as_json:
        for record in records:
            click.echo(json.dumps(_public(record, now)))
        return
    click.echo(f"{'KEY ID':<17} {'STATUS':<8} {'SUBJECT':<20} {'NAME':<20} {'ROLES':<20} EXPIRES")
    for record in records:
        click.echo(
            f"{record.key_id:<17} {record.status(now):<8} {record.subject[:20]:<20} "
            f"{record.name[:20]:<20} {','.join(record.roles)[:20]:<20} {_when(record.expires_at)}"
        )


@keys.command("revoke")
@click.argument("key_id")
@store_option
def revoke_command(key_id: str, store_url: str) -> None:
    """Revoke a key now."""
    record = _run(store_url, lambda manager: manager.revoke(key_id))
    click.echo(f"revoked {record.key_id} at {_when(record.revoked_at)}")


@keys.command("rotate")
@click.argument("key_id")
@click.option(
    "--grace-hours",
    type=click.FloatRange(min=0),
    default=24.0,
    show_default=True,
    help="how long the old key keeps working",
)
@store_option
def rotate_command(key_id: str, grace_hours: float, store_url: str) -> None:
    """Issue a replacement key (printed once); the old one expires after the grace period."""
    issued = _run(store_url, lambda manager: manager.rotate(key_id, grace_s=grace_hours * 3600))
    click.echo(issued.key)
    click.echo(
        f"key id {issued.key_id} replaces {key_id} (which stops working in {grace_hours:g} h): "
        "shown once, store it now",
        err=True,
    )


@keys.command("new-data-key")
@click.option("--kid", required=True, help="key id, e.g. 2025-03")
def new_data_key_command(kid: str) -> None:
    """Print a fresh AES-256 key entry (kid:base64) for $GF_SECURITY_DATA_KEYS or
    $GF_SECURITY_MASTER_KEYS; put it first to make it current."""
    click.echo(new_key_entry(kid))


# ----------------------------------------------------------------------------- service accounts


def _read_accounts(path: str) -> list[dict[str, Any]]:
    from pathlib import Path

    file = Path(path)
    if not file.exists():
        return []
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except ValueError:
        raise ConfigError(f"{path}: not valid JSON", param="accounts") from None
    if not isinstance(data, list) or not all(isinstance(a, dict) for a in data):
        raise ConfigError(f"{path}: expected a JSON list of accounts", param="accounts")
    return data


def _write_accounts(path: str, accounts: list[dict[str, Any]]) -> None:
    from pathlib import Path

    file = Path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(f".{file.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(accounts, handle, indent=2)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, file)


@security.group("accounts")
def accounts() -> None:
    """OAuth2 service accounts (client credentials), kept as secret hashes in a JSON file."""


@accounts.command("add")
@click.argument("accounts_file", type=click.Path(dir_okay=False))
@click.option("--client-id", required=True)
@click.option("--role", "roles", multiple=True)
@click.option("--scope", "scopes", multiple=True)
@click.option("--org", "org_id", default=None)
@click.option("--team", "team_id", default=None)
def accounts_add_command(
    accounts_file: str,
    client_id: str,
    roles: tuple[str, ...],
    scopes: tuple[str, ...],
    org_id: str | None,
    team_id: str | None,
) -> None:
    """Register a service account and print its client secret once."""
    from genai_factory.security.oauth import ServiceAccountRegistry

    registry = ServiceAccountRegistry(_read_accounts(accounts_file))
    secret = registry.register(
        client_id, roles=roles, scopes=scopes, org_id=org_id, team_id=team_id
    )
    _write_accounts(accounts_file, registry.accounts)
    click.echo(secret)
    click.echo(f"client {client_id}: secret shown once, store it now", err=True)


@security.command("serve-tokens")
@click.option(
    "--accounts", "accounts_file", required=True, type=click.Path(exists=True, dir_okay=False)
)
@click.option("--issuer", required=True, help="the iss claim, e.g. https://auth.example.com")
@click.option("--audience", required=True, help="the aud claim, e.g. genai-factory")
@click.option("--kid", required=True, help="key id published in the JWKS")
@click.option("--algorithm", default="ES256", show_default=True)
@click.option("--ttl-s", type=click.IntRange(1, 86_400), default=900, show_default=True)
@click.option(
    "--signing-key-file",
    default=None,
    help="PEM private key (default: $GF_SECURITY_OAUTH_SIGNING_KEY)",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8700, show_default=True)
@tls_options
def serve_tokens_command(
    accounts_file: str,
    issuer: str,
    audience: str,
    kid: str,
    algorithm: str,
    ttl_s: int,
    signing_key_file: str | None,
    host: str,
    port: int,
    tls: TLSConfig,
) -> None:
    """Run the OAuth2 token service: POST /oauth/token, GET /.well-known/jwks.json."""
    import uvicorn

    from genai_factory.security.oauth import (
        ServiceAccountRegistry,
        TokenSigner,
        create_token_app,
    )

    signer = TokenSigner(
        issuer=issuer,
        audience=audience,
        kid=kid,
        algorithm=algorithm,
        ttl_s=ttl_s,
        private_key_file=signing_key_file,
    )
    app = create_token_app(signer, ServiceAccountRegistry(_read_accounts(accounts_file)))
    scheme = "https" if tls.enabled else "http"
    click.echo(f"token service on {scheme}://{host}:{port}/oauth/token", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", **tls.uvicorn_kwargs())
