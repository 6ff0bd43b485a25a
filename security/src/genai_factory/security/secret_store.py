"""Secrets: one provider contract; environment, files, an encrypted local store, and a chain.

Every provider answers ``await get(name) -> SecretStr`` (so a value prints as ``**********``)
and raises :class:`~genai_factory.shared.errors.NotFound` naming the secret, never its value.
Writable providers also ``set``, ``delete`` and ``list``. HashiCorp Vault lives in
:mod:`genai_factory.security.vault`.

:class:`EncryptedSecretStore` is envelope encryption in one file: each secret has its own random
256-bit data key (AES-GCM, bound to the secret's name), and the data key is wrapped by a master
key from a :class:`MasterKeyProvider` (KMS-style: ``wrap``/``unwrap``, and optionally
``generate_data_key``; :class:`LocalMasterKeys` takes master keys from the environment,
:class:`~genai_factory.security.kms.AWSKMSMasterKeys` keeps them in AWS KMS). Rotating the master key re-wraps the data keys only;
the secrets' ciphertexts are untouched.

Example:
    >>> import asyncio, tempfile, pathlib
    >>> from genai_factory.security.encryption import Keyring, new_key_entry
    >>> from genai_factory.security.secret_store import EncryptedSecretStore, LocalMasterKeys
    >>> async def demo() -> str:
    ...     with tempfile.TemporaryDirectory() as tmp:
    ...         master = LocalMasterKeys(keyring=Keyring.parse(new_key_entry("m1")))
    ...         store = EncryptedSecretStore(str(pathlib.Path(tmp) / "s.json"), master=master)
    ...         await store.set("openai-api-key", "sk-example")
    ...         return (await store.get("openai-api-key")).get_secret_value()
    >>> asyncio.run(demo())
    'sk-example'
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import os
import re
import secrets
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import SecretStr

from genai_factory.security.encryption import AtRestCipher, DecryptionError, Keyring
from genai_factory.shared.errors import ConfigError, NotFound, ValidationError

__all__ = [
    "ChainSecretProvider",
    "EncryptedSecretStore",
    "EnvSecretProvider",
    "FileSecretProvider",
    "LocalMasterKeys",
    "MasterKeyProvider",
    "SecretProvider",
    "WritableSecretProvider",
    "validate_secret_name",
]

logger = logging.getLogger(__name__)

DEFAULT_MASTER_KEYS_ENV = "GF_SECURITY_MASTER_KEYS"
MAX_SECRET_BYTES = 64 * 1024
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,127}){0,7}")


def validate_secret_name(name: str) -> str:
    """``name`` if it is a safe secret name (letters, digits, ``_.-``, ``/`` between parts).

    No empty parts, no ``.``/``..`` parts, nothing that could walk out of a directory.

    >>> validate_secret_name("db/password")
    'db/password'
    >>> validate_secret_name("../etc/passwd")
    Traceback (most recent call last):
    ...
    genai_factory.shared.errors.ValidationError: invalid secret name
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name.split("/"):
        raise ValidationError("invalid secret name", param="name")
    return name


@runtime_checkable
class SecretProvider(Protocol):
    async def get(self, name: str) -> SecretStr: ...


@runtime_checkable
class WritableSecretProvider(SecretProvider, Protocol):
    async def set(self, name: str, value: str) -> None: ...

    async def delete(self, name: str) -> bool: ...

    async def list(self) -> list[str]: ...


class EnvSecretProvider:
    """Secrets from environment variables: ``db/password`` -> ``$GF_SECRET_DB_PASSWORD``."""

    def __init__(self, prefix: str = "GF_SECRET_") -> None:
        self.prefix = prefix

    def variable(self, name: str) -> str:
        return self.prefix + re.sub(r"[^A-Za-z0-9]", "_", validate_secret_name(name)).upper()

    async def get(self, name: str) -> SecretStr:
        value = os.environ.get(self.variable(name))
        if value is None:
            raise NotFound(f"secret {name!r} not found (set ${self.variable(name)})", param="name")
        return SecretStr(value)


class FileSecretProvider:
    """Secrets as files in a directory (Docker and Kubernetes secret mounts): one file each.

    A single trailing newline is dropped. Names cannot leave the directory.
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def _path(self, name: str) -> Path:
        root = Path(self.directory).resolve()
        path = (root / validate_secret_name(name)).resolve()
        if root not in path.parents:
            raise ValidationError("invalid secret name", param="name")
        return path

    async def get(self, name: str) -> SecretStr:
        path = self._path(name)

        def read() -> bytes | None:
            try:
                with path.open("rb") as handle:
                    return handle.read(MAX_SECRET_BYTES + 1)
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                return None

        data = await asyncio.to_thread(read)
        if data is None:
            raise NotFound(f"secret {name!r} not found in {self.directory}", param="name")
        if len(data) > MAX_SECRET_BYTES:
            raise ValidationError(f"secret {name!r} is larger than {MAX_SECRET_BYTES} bytes")
        text = data.decode("utf-8")
        return SecretStr(text[:-1] if text.endswith("\n") else text)


class ChainSecretProvider:
    """Asks each provider in turn; the first that has the secret answers."""

    def __init__(self, providers: Sequence[SecretProvider]) -> None:
        self.providers = list(providers)

    async def get(self, name: str) -> SecretStr:
        for provider in self.providers:
            try:
                return await provider.get(name)
            except NotFound:
                continue
        raise NotFound(f"secret {name!r} not found in any provider", param="name")


@runtime_checkable
class MasterKeyProvider(Protocol):
    """Wraps and unwraps data keys, KMS-style. The master key never leaves the provider."""

    @property
    def current_key_id(self) -> str: ...

    async def wrap(self, data_key: bytes, aad: bytes) -> tuple[str, bytes]: ...

    async def unwrap(self, key_id: str, wrapped: bytes, aad: bytes) -> bytes: ...


class LocalMasterKeys:
    """Master keys held in process, from ``$GF_SECURITY_MASTER_KEYS`` (``kid:base64,...``,
    first is current) or a :class:`Keyring`. :class:`~genai_factory.security.kms.AWSKMSMasterKeys`
    implements the same three members against AWS KMS (plus ``generate_data_key``)."""

    def __init__(
        self, *, keys_env: str = DEFAULT_MASTER_KEYS_ENV, keyring: Keyring | None = None
    ) -> None:
        self.keys_env = keys_env
        self._cipher = AtRestCipher(keys_env=keys_env, keyring=keyring)

    def to_params(self) -> dict[str, str]:
        return {"keys_env": self.keys_env}

    @property
    def current_key_id(self) -> str:
        return self._cipher.keyring.current

    async def wrap(self, data_key: bytes, aad: bytes) -> tuple[str, bytes]:
        return self.current_key_id, self._cipher.encrypt(data_key, aad)

    async def unwrap(self, key_id: str, wrapped: bytes, aad: bytes) -> bytes:
        if self._cipher.key_id_of(wrapped) != key_id:
            raise DecryptionError("wrapped key does not match its key id")
        return self._cipher.decrypt(wrapped, aad)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any) -> bytes:
    if not isinstance(text, str):
        raise DecryptionError("malformed secret store entry")
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        raise DecryptionError("malformed secret store entry") from None


class EncryptedSecretStore:
    """Envelope-encrypted secrets in one JSON file (mode 0600, atomic replace on every write).

    Each entry: the master key id, the wrapped data key, a nonce and the AES-GCM ciphertext of
    the value, bound to the secret's name.
    """

    def __init__(self, path: str, master: MasterKeyProvider) -> None:
        self.path = path
        self.master = master
        self._lock = asyncio.Lock()

    # file I/O runs in a thread; the lock serialises writers inside this process

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(Path(self.path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"version": 1, "secrets": {}}
        except (OSError, ValueError):
            raise ConfigError(f"secret store {self.path} is unreadable", param="path") from None
        if not isinstance(data, dict) or not isinstance(data.get("secrets"), dict):
            raise ConfigError(f"secret store {self.path} is malformed", param="path")
        return data

    def _write(self, data: dict[str, Any]) -> None:
        target = Path(self.path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(data, handle, indent=1, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        directory = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself survives a crash
        finally:
            os.close(directory)

    @staticmethod
    def _aad(name: str) -> bytes:
        return f"gf-secret:{name}".encode()

    async def set(self, name: str, value: str) -> None:
        validate_secret_name(name)
        plaintext = value.encode("utf-8")
        if len(plaintext) > MAX_SECRET_BYTES:
            raise ValidationError(f"secret values are limited to {MAX_SECRET_BYTES} bytes")
        generate = getattr(self.master, "generate_data_key", None)
        if generate is not None:  # KMS-style: one call makes the data key and wraps it
            data_key, key_id, wrapped = await generate(self._aad(name))
        else:
            data_key = AESGCM.generate_key(bit_length=256)
            key_id, wrapped = await self.master.wrap(data_key, self._aad(name))
        nonce = secrets.token_bytes(12)
        ciphertext = AESGCM(data_key).encrypt(nonce, plaintext, self._aad(name))
        entry = {
            "master_key_id": key_id,
            "wrapped_key": _b64(wrapped),
            "nonce": _b64(nonce),
            "ciphertext": _b64(ciphertext),
            "updated_at": time.time(),
        }
        async with self._lock:
            data = await asyncio.to_thread(self._read)
            data["secrets"][name] = entry
            await asyncio.to_thread(self._write, data)
        logger.info("secret stored", extra={"secret_name": name, "master_key_id": key_id})

    async def get(self, name: str) -> SecretStr:
        validate_secret_name(name)
        data = await asyncio.to_thread(self._read)
        entry = data["secrets"].get(name)
        if not isinstance(entry, dict):
            raise NotFound(f"secret {name!r} not found", param="name")
        data_key = await self.master.unwrap(
            str(entry.get("master_key_id")), _unb64(entry.get("wrapped_key")), self._aad(name)
        )
        try:
            plaintext = AESGCM(data_key).decrypt(
                _unb64(entry.get("nonce")), _unb64(entry.get("ciphertext")), self._aad(name)
            )
        except (InvalidTag, ValueError):
            raise DecryptionError(f"secret {name!r} failed authentication") from None
        return SecretStr(plaintext.decode("utf-8"))

    async def delete(self, name: str) -> bool:
        validate_secret_name(name)
        async with self._lock:
            data = await asyncio.to_thread(self._read)
            found = data["secrets"].pop(name, None) is not None
            if found:
                await asyncio.to_thread(self._write, data)
        if found:
            logger.info("secret deleted", extra={"secret_name": name})
        return found

    async def list(self) -> list[str]:
        return sorted((await asyncio.to_thread(self._read))["secrets"])

    async def rotate_master_key(self) -> int:
        """Re-wrap every data key not wrapped by the current master key; returns how many.

        The secrets' own ciphertexts do not change, so this is quick and safe to repeat.
        """
        async with self._lock:
            data = await asyncio.to_thread(self._read)
            current = self.master.current_key_id
            rewrapped = 0
            for name, entry in data["secrets"].items():
                if entry.get("master_key_id") == current:
                    continue
                aad = self._aad(name)
                data_key = await self.master.unwrap(
                    str(entry.get("master_key_id")), _unb64(entry.get("wrapped_key")), aad
                )
                key_id, wrapped = await self.master.wrap(data_key, aad)
                entry.update({"master_key_id": key_id, "wrapped_key": _b64(wrapped)})
                rewrapped += 1
            if rewrapped:
                await asyncio.to_thread(self._write, data)
        logger.info("master key rotated", extra={"rewrapped": rewrapped, "master_key_id": current})
        return rewrapped
