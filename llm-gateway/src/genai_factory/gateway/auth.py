"""API-key authentication: keys from config or the environment, kept only as SHA-256 digests.

A client sends its key as ``Authorization: Bearer KEY``, ``x-api-key: KEY`` (Anthropic clients)
or ``api-key: KEY`` (Azure clients). The presented key is hashed and compared with every known
digest in constant time, so neither timing nor memory dumps reveal a key.

Example:
    >>> import asyncio
    >>> auth = APIKeyAuthenticator(keys=[{"key": "sk-test-1234", "subject": "alice",
    ...                                   "org_id": "acme"}], keys_env=None)
    >>> principal = asyncio.run(auth.authenticate({"authorization": "Bearer sk-test-1234"}))
    >>> principal.subject, principal.org_id, principal.auth_method
    ('alice', 'acme', 'api_key')
    >>> "sk-test-1234" in str(auth.to_params())
    False
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from genai_factory.shared.contracts import AuthDecision
from genai_factory.shared.errors import ConfigError, Unauthorized
from genai_factory.shared.models import Principal

__all__ = ["ANONYMOUS", "APIKeyAuthenticator", "ModelScopes", "hash_key"]

ANONYMOUS = Principal(subject="anonymous")
_FIELDS = ("subject", "org_id", "team_id", "user_id", "key_id")


def hash_key(key: str) -> str:
    """The SHA-256 hex digest a key is stored as."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class _KeyEntry:
    digest: bytes
    principal: Principal
    spec: dict[str, Any]


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The API key in ``authorization: Bearer``, ``x-api-key`` or ``api-key``."""
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return headers.get("x-api-key") or headers.get("api-key") or None


class APIKeyAuthenticator:
    """Maps API keys to principals.

    Args:
        keys: entries with one of ``key`` (hashed on load, then forgotten), ``key_sha256`` or
            ``key_env`` (an environment variable holding the key), plus the principal's
            ``subject``, ``org_id``, ``team_id``, ``user_id``, ``key_id``, ``roles``, ``scopes``.
        keys_env: an environment variable with comma-separated keys (``KEY`` or
            ``KEY=subject``), for containers; None to ignore the environment.
        required: refuse requests without a valid key (default: when any key is configured);
            when False, a request without a key is the anonymous principal.
    """

    def __init__(
        self,
        keys: list[dict[str, Any]] | None = None,
        keys_env: str | None = "GF_GATEWAY_API_KEYS",
        required: bool | None = None,
    ) -> None:
        self.keys_env = keys_env
        self._entries = [self._entry(spec, i) for i, spec in enumerate(keys or [])]
        if keys_env and os.environ.get(keys_env):
            for i, item in enumerate(os.environ[keys_env].split(",")):
                key, _, subject = item.strip().partition("=")
                if key:
                    self._entries.append(
                        self._entry({"key": key, "subject": subject or f"env-key-{i}"}, i, False)
                    )
        self.required = bool(self._entries) if required is None else required

    def to_params(self) -> dict[str, Any]:
        """Digests only: a dumped config never holds a key."""
        return {
            "keys": [entry.spec for entry in self._entries if entry.spec],
            "keys_env": self.keys_env,
            "required": self.required,
        }

    @staticmethod
    def _entry(spec: Mapping[str, Any], index: int, keep: bool = True) -> _KeyEntry:
        spec = dict(spec)
        if "key" in spec:
            digest = hash_key(str(spec.pop("key")))
        elif "key_env" in spec:
            value = os.environ.get(str(spec["key_env"]))
            if not value:
                raise ConfigError(
                    f"auth.keys.{index}: environment variable '{spec['key_env']}' is not set",
                    param=f"auth.keys.{index}.key_env",
                )
            digest = hash_key(value)
        elif "key_sha256" in spec:
            digest = str(spec["key_sha256"]).lower()
        else:
            raise ConfigError(
                f"auth.keys.{index} needs 'key', 'key_sha256' or 'key_env'",
                param=f"auth.keys.{index}",
            )
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ConfigError(
                f"auth.keys.{index}.key_sha256 is not a SHA-256 hex digest",
                param=f"auth.keys.{index}.key_sha256",
            )
        fields = {name: spec[name] for name in _FIELDS if spec.get(name) is not None}
        fields.setdefault("subject", f"key-{digest[:8]}")
        fields.setdefault("key_id", digest[:12])
        principal = Principal(
            **fields,
            roles=frozenset(spec.get("roles") or ()),
            scopes=frozenset(spec.get("scopes") or ()),
            auth_method="api_key",
        )
        # what a dump keeps: the env var's name, or the digest; never the key itself
        stored = spec if "key_env" in spec else spec | {"key_sha256": digest}
        return _KeyEntry(bytes.fromhex(digest), principal, stored if keep else {})

    async def authenticate(self, headers: Mapping[str, str]) -> Principal:
        key = presented_key(headers)
        if key is None:
            if self.required:
                raise Unauthorized("missing API key (send 'Authorization: Bearer <key>')")
            return ANONYMOUS
        digest = hashlib.sha256(key.encode("utf-8")).digest()
        found: Principal | None = None
        for entry in self._entries:  # no early exit: every key costs the same comparisons
            if hmac.compare_digest(entry.digest, digest):
                found = entry.principal
        if found is None:
            raise Unauthorized("invalid API key")
        return found


class ModelScopes:
    """A small built-in Authorizer: a caller may use model NAME when its key's ``scopes`` hold
    ``model:NAME`` or ``model:*``; with ``per_operation``, it also needs the operation's scope
    (``gateway:chat``, ``gateway:completion``, ``gateway:embedding``). Deny by default.

    Example:
        >>> import asyncio
        >>> rule = ModelScopes()
        >>> alice = Principal(subject="alice", scopes=frozenset({"model:m"}))
        >>> asyncio.run(rule.authorize(alice, "gateway:chat", "model:m")).allowed
        True
        >>> asyncio.run(rule.authorize(alice, "gateway:chat", "model:other")).rule
        'no model scope'
    """

    def __init__(self, per_operation: bool = False) -> None:
        self.per_operation = per_operation

    async def authorize(
        self,
        principal: Principal,
        action: str,
        resource: str,
        context: Mapping[str, Any] | None = None,
    ) -> AuthDecision:
        if resource not in principal.scopes and "model:*" not in principal.scopes:
            return AuthDecision(False, "no model scope", f"{resource} is not in the key's scopes")
        if self.per_operation and action not in principal.scopes:
            return AuthDecision(False, "no operation scope", f"{action} is not in the key's scopes")
        return AuthDecision(True, "model scope")
