"""HashiCorp Vault KV v2 as a secret provider (through ``hvac``, calls run in a worker thread).

A secret ``db/password`` lives at ``<mount>/data/<path_prefix>/db/password`` with its value in
the field ``value``; ``name#field`` reads another field of the same entry. The Vault token comes
from ``token`` or ``$VAULT_TOKEN`` and never appears in errors or logs: hvac's exceptions are
replaced by the platform's own (NotFound, ServiceUnavailable) carrying the secret name only.

Example (needs a Vault server; see ``docker-compose.yml``)::

    vault = VaultSecretProvider(url="https://vault.internal:8200", mount="secret")
    await vault.set("openai-api-key", "sk-...")
    key = await vault.get("openai-api-key")      # SecretStr
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from typing import Any, TypeVar

import hvac  # type: ignore[import-untyped]
import hvac.exceptions  # type: ignore[import-untyped]
import requests
from pydantic import SecretStr

from genai_factory.security.secret_store import MAX_SECRET_BYTES, validate_secret_name
from genai_factory.shared.errors import ConfigError, NotFound, ServiceUnavailable, ValidationError

__all__ = ["VaultSecretProvider"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
DEFAULT_FIELD = "value"


class VaultSecretProvider:
    """Secrets in a Vault KV v2 engine mounted at ``mount``, under ``path_prefix``.

    ``verify`` is True (system CAs), False (never outside tests) or a CA bundle path.
    """

    def __init__(
        self,
        *,
        url: str,
        mount: str = "secret",
        path_prefix: str = "genai-factory",
        token: SecretStr | None = None,
        token_env: str = "VAULT_TOKEN",  # noqa: S107 - the name of a variable
        namespace: str | None = None,
        timeout_s: float = 5.0,
        verify: bool | str = True,
    ) -> None:
        self.url = url
        self.mount = mount
        self.path_prefix = path_prefix.strip("/")
        self.token_env = token_env
        self.namespace = namespace
        self.timeout_s = timeout_s
        self.verify = verify
        resolved = token.get_secret_value() if token is not None else os.environ.get(token_env)
        if not resolved:
            raise ConfigError(f"no Vault token: set ${token_env}", param=token_env)
        self._client = hvac.Client(
            url=url, token=resolved, namespace=namespace, timeout=timeout_s, verify=verify
        )

    def to_params(self) -> dict[str, Any]:
        """Config form; the token is never dumped, only the variable it comes from."""
        params: dict[str, Any] = {
            "url": self.url,
            "mount": self.mount,
            "path_prefix": self.path_prefix,
            "token_env": self.token_env,
            "timeout_s": self.timeout_s,
            "verify": self.verify,
        }
        if self.namespace:
            params["namespace"] = self.namespace
        return params

    def _path(self, name: str) -> str:
        validate_secret_name(name)
        return f"{self.path_prefix}/{name}" if self.path_prefix else name

    async def _call(self, name: str, work: Callable[[], T]) -> T:
        try:
            return await asyncio.to_thread(work)
        except hvac.exceptions.InvalidPath:
            raise NotFound(f"secret {name!r} not found in Vault", param="name") from None
        except (hvac.exceptions.Forbidden, hvac.exceptions.Unauthorized):
            logger.warning("vault denied access", extra={"secret_name": name})
            raise ServiceUnavailable(f"Vault denied access to secret {name!r}") from None
        except hvac.exceptions.InvalidRequest:
            raise ValidationError(f"Vault refused the request for secret {name!r}") from None
        except (hvac.exceptions.VaultError, requests.RequestException) as exc:
            logger.warning(
                "vault unavailable", extra={"secret_name": name, "error": type(exc).__name__}
            )
            raise ServiceUnavailable(
                f"Vault is unavailable ({type(exc).__name__})", retry_after=5
            ) from None

    async def get(self, name: str) -> SecretStr:
        """The value of ``name`` (field ``value``), or of ``name#field``."""
        path_name, _, field = name.partition("#")
        field = field or DEFAULT_FIELD
        path = self._path(path_name)
        response = await self._call(
            name,
            lambda: self._client.secrets.kv.v2.read_secret_version(
                path=path, mount_point=self.mount, raise_on_deleted_version=True
            ),
        )
        data = (response.get("data") or {}).get("data") or {}
        value = data.get(field)
        if not isinstance(value, str):
            raise NotFound(f"secret {name!r} has no field {field!r}", param="name")
        return SecretStr(value)

    async def set(self, name: str, value: str) -> None:
        if len(value.encode("utf-8")) > MAX_SECRET_BYTES:
            raise ValidationError(f"secret values are limited to {MAX_SECRET_BYTES} bytes")
        path = self._path(name)
        await self._call(
            name,
            lambda: self._client.secrets.kv.v2.create_or_update_secret(
                path=path, secret={DEFAULT_FIELD: value}, mount_point=self.mount
            ),
        )
        logger.info("secret stored in vault", extra={"secret_name": name})

    async def delete(self, name: str) -> bool:
        """Delete every version and the metadata. False when there was nothing to delete."""
        path = self._path(name)
        try:
            await self._call(
                name,
                lambda: self._client.secrets.kv.v2.read_secret_metadata(
                    path=path, mount_point=self.mount
                ),
            )
        except NotFound:
            return False
        await self._call(
            name,
            lambda: self._client.secrets.kv.v2.delete_metadata_and_all_versions(
                path=path, mount_point=self.mount
            ),
        )
        logger.info("secret deleted from vault", extra={"secret_name": name})
        return True

    async def list(self) -> list[str]:
        """Secret names directly under ``path_prefix`` (sub-folders end with ``/``)."""
        try:
            response = await self._call(
                self.path_prefix or "/",
                lambda: self._client.secrets.kv.v2.list_secrets(
                    path=self.path_prefix, mount_point=self.mount
                ),
            )
        except NotFound:
            return []
        keys = (response.get("data") or {}).get("keys") or []
        return sorted(str(k) for k in keys)
