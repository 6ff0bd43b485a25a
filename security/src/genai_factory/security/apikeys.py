"""API keys: random, prefixed, shown once, stored as keyed hashes; expiry, rotation, revocation.

A key looks like ``gf-<key id>_<secret>``: the 16-hex-digit key id is public (it names the key in
lists and logs); the 256-bit secret is not. The store keeps only
``HMAC-SHA256(server secret, key)``, so a stolen database cannot be used to call the API, and
comparison is constant-time. Rotation issues a new key with the same owner and permissions and
lets the old one live for a grace period; revocation takes effect on the next request.

Example:
    >>> import asyncio, tempfile, pathlib
    >>> from pydantic import SecretStr
    >>> from genai_factory.security.apikeys import APIKeyAuthenticator, APIKeyManager
    >>> from genai_factory.security.keystore import SQLiteAPIKeyStore
    >>> async def demo() -> tuple[str, str]:
    ...     with tempfile.TemporaryDirectory() as tmp:
    ...         store = SQLiteAPIKeyStore(str(pathlib.Path(tmp) / "keys.db"))
    ...         manager = APIKeyManager(store, secret=SecretStr("s" * 32))
    ...         issued = await manager.create("ci", subject="svc:ci", roles=["viewer"])
    ...         principal = await APIKeyAuthenticator(manager).authenticate(
    ...             {"Authorization": f"Bearer {issued.key}"})
    ...         await store.close()
    ...         return principal.subject, principal.auth_method
    >>> asyncio.run(demo())
    ('svc:ci', 'api_key')
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import SecretStr

from genai_factory.security.credentials import bearer_credential
from genai_factory.security.keystore import APIKeyRecord, APIKeyStore
from genai_factory.shared.errors import ConfigError, Conflict, NotFound, Unauthorized
from genai_factory.shared.models import Principal

__all__ = [
    "DEFAULT_SECRET_ENV",
    "APIKeyAuthenticator",
    "APIKeyManager",
    "IssuedKey",
    "hash_api_key",
]

logger = logging.getLogger(__name__)

DEFAULT_SECRET_ENV = "GF_SECURITY_API_KEY_SECRET"  # noqa: S105 - a variable name
MIN_SECRET_BYTES = 32
_PREFIX = re.compile(r"[a-z]{1,8}-")
_KEY_ID_HEX = 16
_SECRET_BYTES = 32
_NAME = re.compile(r"[\w .:@/-]{1,100}")


def hash_api_key(key: str, secret: bytes) -> str:
    """HMAC-SHA256 of ``key`` under the server ``secret``, hex-encoded.

    >>> hash_api_key("gf-00_x", b"k" * 32)[:16]
    '1f6e95d9746b534e'
    """
    return hmac.new(secret, key.encode("utf-8"), hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A freshly issued key: ``key`` is the only time the plaintext exists; show it once."""

    key: str = field(repr=False)
    record: APIKeyRecord

    @property
    def key_id(self) -> str:
        return self.record.key_id


def _resolve_secret(secret: SecretStr | None, secret_env: str) -> bytes:
    if secret is not None:
        value = secret.get_secret_value()
        source = "the 'secret' parameter"
    else:
        value = os.environ.get(secret_env, "")
        source = f"${secret_env}"
        if not value:
            raise ConfigError(
                f"no API key hashing secret: set {source} (at least {MIN_SECRET_BYTES} bytes)",
                param=secret_env,
            )
    raw = value.encode("utf-8")
    if len(raw) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"the API key hashing secret from {source} is too short "
            f"({len(raw)} bytes, need at least {MIN_SECRET_BYTES})",
            param=secret_env,
        )
    return raw


class APIKeyManager:
    """Issues, verifies, rotates, revokes and lists API keys held in an :class:`APIKeyStore`.

    ``secret`` (or the environment variable ``secret_env``) keys the HMAC; changing it
    invalidates every stored key. ``clock`` exists for tests.
    """

    def __init__(
        self,
        store: APIKeyStore,
        *,
        secret_env: str = DEFAULT_SECRET_ENV,
        secret: SecretStr | None = None,
        prefix: str = "gf-",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not _PREFIX.fullmatch(prefix):
            raise ConfigError(
                f"API key prefix must be 1-8 lowercase letters and '-', got {prefix!r}",
                param="prefix",
            )
        self.store = store
        self.secret_env = secret_env
        self.prefix = prefix
        self._secret = _resolve_secret(secret, secret_env)
        self._clock = clock
        # verifying an unknown key id costs one HMAC too, so timing does not reveal which exist
        self._decoy_hash = hash_api_key(f"{prefix}decoy", self._secret)

    def to_params(self) -> dict[str, Any]:
        """Config form; the secret itself is never dumped, only where it comes from."""
        return {"store": self.store, "secret_env": self.secret_env, "prefix": self.prefix}

    def _new_key(self) -> tuple[str, str]:
        key_id = secrets.token_hex(_KEY_ID_HEX // 2)
        key = f"{self.prefix}{key_id}_{secrets.token_urlsafe(_SECRET_BYTES)}"
        return key_id, key

    def parse_key_id(self, key: str) -> str | None:
        """The key id inside ``key``, or None if ``key`` is not shaped like one of ours."""
        if not key.startswith(self.prefix):
            return None
        key_id, sep, rest = key[len(self.prefix) :].partition("_")
        if not sep or len(key_id) != _KEY_ID_HEX or not rest or len(rest) > 128:
            return None
        if any(c not in "0123456789abcdef" for c in key_id):
            return None
        return key_id

    async def create(
        self,
        name: str,
        *,
        subject: str,
        org_id: str | None = None,
        team_id: str | None = None,
        user_id: str | None = None,
        roles: Iterable[str] = (),
        scopes: Iterable[str] = (),
        ttl_s: float | None = None,
    ) -> IssuedKey:
        """Issue a new key. The returned plaintext is never stored or logged."""
        if not _NAME.fullmatch(name):
            raise ConfigError(
                "key name must be 1-100 letters, digits, spaces or . : @ / - _", param="name"
            )
        if not subject:
            raise ConfigError("a key needs a subject (who it acts for)", param="subject")
        if ttl_s is not None and ttl_s <= 0:
            raise ConfigError(f"ttl_s must be positive, got {ttl_s}", param="ttl_s")
        now = self._clock()
        key_id, key = self._new_key()
        record = APIKeyRecord(
            key_id=key_id,
            key_hash=hash_api_key(key, self._secret),
            name=name,
            subject=subject,
            org_id=org_id,
            team_id=team_id,
            user_id=user_id,
            roles=tuple(sorted(set(roles))),
            scopes=tuple(sorted(set(scopes))),
            created_at=now,
            expires_at=None if ttl_s is None else now + ttl_s,
        )
        await self.store.insert(record)
        logger.info(
            "api key created", extra={"key_id": key_id, "subject": subject, "key_name": name}
        )
        return IssuedKey(key=key, record=record)

    async def verify(self, key: str) -> APIKeyRecord:
        """The record behind ``key`` if it is genuine, not revoked and not expired."""
        key_id = self.parse_key_id(key)
        record = await self.store.get(key_id) if key_id is not None else None
        presented = hash_api_key(key, self._secret)
        expected = record.key_hash if record is not None else self._decoy_hash
        genuine = hmac.compare_digest(presented, expected)
        if record is None or not genuine:
            logger.info("api key rejected", extra={"key_id": key_id, "reason": "unknown"})
            raise Unauthorized("invalid API key", code="invalid_api_key")
        status = record.status(self._clock())
        if status != "active":
            logger.info("api key rejected", extra={"key_id": key_id, "reason": status})
            raise Unauthorized(f"API key {status}", code=f"api_key_{status}")
        return record

    async def _existing(self, key_id: str) -> APIKeyRecord:
        record = await self.store.get(key_id)
        if record is None:
            raise NotFound(f"no API key with id {key_id}", param="key_id")
        return record

    async def revoke(self, key_id: str) -> APIKeyRecord:
        """Revoke now; the next request with the key is refused. Revoking twice is harmless."""
        record = await self._existing(key_id)
        if record.revoked_at is None:
            record = record.with_changes(revoked_at=self._clock())
            await self.store.update(record)
            logger.info("api key revoked", extra={"key_id": key_id})
        return record

    async def rotate(self, key_id: str, *, grace_s: float = 86_400.0) -> IssuedKey:
        """Issue a replacement with the same owner and permissions; the old key keeps working
        for ``grace_s`` seconds (0 ends it now), then expires."""
        if grace_s < 0:
            raise ConfigError(f"grace_s must be >= 0, got {grace_s}", param="grace_s")
        old = await self._existing(key_id)
        now = self._clock()
        if old.status(now) != "active":
            raise Conflict(f"API key {key_id} is {old.status(now)} and cannot be rotated")
        remaining = None if old.expires_at is None else old.expires_at - old.created_at
        issued = await self.create(
            old.name,
            subject=old.subject,
            org_id=old.org_id,
            team_id=old.team_id,
            user_id=old.user_id,
            roles=old.roles,
            scopes=old.scopes,
            ttl_s=remaining,
        )
        grace_end = now + grace_s
        expires_at = grace_end if old.expires_at is None else min(old.expires_at, grace_end)
        await self.store.update(
            old.with_changes(expires_at=expires_at, replaced_by=issued.record.key_id)
        )
        logger.info(
            "api key rotated",
            extra={"key_id": key_id, "replaced_by": issued.record.key_id, "grace_s": grace_s},
        )
        return issued

    async def list(self, subject: str | None = None) -> list[APIKeyRecord]:
        return await self.store.list(subject)


class APIKeyAuthenticator:
    """Authenticator for API keys sent as ``Authorization: Bearer <key>`` or ``x-api-key``."""

    def __init__(self, manager: APIKeyManager) -> None:
        self.manager = manager

    def accepts(self, credential: str) -> bool:
        """Whether ``credential`` is shaped like one of this manager's keys."""
        return credential.startswith(self.manager.prefix)

    async def authenticate(self, headers: Mapping[str, str]) -> Principal:
        return await self.authenticate_credential(bearer_credential(headers))

    async def authenticate_credential(self, credential: str) -> Principal:
        record = await self.manager.verify(credential)
        return Principal(
            subject=record.subject,
            org_id=record.org_id,
            team_id=record.team_id,
            user_id=record.user_id,
            key_id=record.key_id,
            roles=frozenset(record.roles),
            scopes=frozenset(record.scopes),
            auth_method="api_key",
        )
