"""Encryption at rest: AES-256-GCM with the key id in a header, and rotation without downtime.

Stored prompts, responses and audit payloads go through :class:`AtRestCipher`. Every ciphertext
starts with a header naming the key that sealed it::

    b"GFE1" | key id length (1 byte) | key id (ASCII) | 12-byte nonce | ciphertext + 16-byte tag

The header is authenticated (it is part of the AES-GCM associated data, with an optional
caller-supplied context such as a record id), so a key id cannot be swapped and a ciphertext
cannot be moved to another record. A :class:`Keyring` holds every key that may still be needed
to decrypt plus the *current* one used to encrypt; rotating means adding a new current key,
re-encrypting at leisure (:meth:`AtRestCipher.reencrypt`), then retiring the old key.

Keys come from the environment as ``kid:base64key,kid:base64key`` (the first is current):

Example:
    >>> from pydantic import SecretStr
    >>> from genai_factory.security.encryption import AtRestCipher, Keyring, new_key_entry
    >>> old = Keyring.parse(new_key_entry("k1"))
    >>> blob = AtRestCipher(keyring=old).encrypt_text("the prompt", context="prompt:42")
    >>> blob.startswith("gfe1.")
    True
    >>> rotated = AtRestCipher(keyring=Keyring.parse(new_key_entry("k2") + "," + old.export()))
    >>> rotated.decrypt_text(blob, context="prompt:42"), rotated.key_id_of_text(blob)
    ('the prompt', 'k1')
    >>> rotated.key_id_of_text(rotated.reencrypt_text(blob, context="prompt:42"))
    'k2'
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import secrets
from collections.abc import Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import SecretStr

from genai_factory.shared.errors import ConfigError, GFError

__all__ = [
    "DEFAULT_DATA_KEYS_ENV",
    "AtRestCipher",
    "DecryptionError",
    "Keyring",
    "new_key_entry",
]

DEFAULT_DATA_KEYS_ENV = "GF_SECURITY_DATA_KEYS"
MAGIC = b"GFE1"
TEXT_PREFIX = "gfe1."
NONCE_BYTES = 12
KEY_BYTES = 32
_KID = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class DecryptionError(GFError):
    """A ciphertext could not be opened: unknown key id, wrong context, or tampered bytes.

    The message names the key id at most, never key material or plaintext.
    """

    status = 500
    error_type = "server_error"


def new_key_entry(kid: str) -> str:
    """A fresh random AES-256 key as a keyring entry ``kid:base64``."""
    if not _KID.fullmatch(kid):
        raise ConfigError(f"key id must match {_KID.pattern}, got {kid!r}", param="kid")
    return f"{kid}:{base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()}"


class Keyring:
    """Named 256-bit keys and which one is current. Never printed: repr shows key ids only."""

    def __init__(self, keys: Mapping[str, bytes], current: str) -> None:
        if current not in keys:
            raise ConfigError(f"the current key id {current!r} is not in the keyring")
        for kid, key in keys.items():
            if not _KID.fullmatch(kid):
                raise ConfigError(f"invalid key id {kid!r}", param="keys")
            if len(key) != KEY_BYTES:
                raise ConfigError(
                    f"key {kid!r} must be {KEY_BYTES} bytes, got {len(key)}", param="keys"
                )
        self._keys = dict(keys)
        self.current = current

    def __repr__(self) -> str:
        return f"Keyring(current={self.current!r}, key_ids={sorted(self._keys)!r})"

    @property
    def key_ids(self) -> list[str]:
        return sorted(self._keys)

    def key(self, kid: str) -> bytes | None:
        return self._keys.get(kid)

    @classmethod
    def parse(cls, text: str, *, source: str = "keyring") -> Keyring:
        """``kid:base64,kid:base64``; the first entry is the current key."""
        keys: dict[str, bytes] = {}
        current = None
        for entry in (e.strip() for e in text.split(",")):
            if not entry:
                continue
            kid, sep, encoded = entry.partition(":")
            if not sep:
                raise ConfigError(f"{source}: entries must look like kid:base64key", param=source)
            try:
                key = base64.b64decode(encoded, validate=True)
            except binascii.Error:
                raise ConfigError(
                    f"{source}: key {kid!r} is not valid base64", param=source
                ) from None
            if kid in keys:
                raise ConfigError(f"{source}: key id {kid!r} appears twice", param=source)
            keys[kid] = key
            current = current or kid
        if current is None:
            raise ConfigError(f"{source}: no keys", param=source)
        return cls(keys, current)

    @classmethod
    def from_env(cls, var: str) -> Keyring:
        text = os.environ.get(var, "")
        if not text:
            raise ConfigError(
                f"no encryption keys: set ${var} to kid:base64key[,kid:base64key...] "
                "(`gf security keys new-data-key` makes one)",
                param=var,
            )
        return cls.parse(text, source=f"${var}")

    def export(self) -> str:
        """The keyring in its ``kid:base64`` form, current key first (this is secret)."""
        order = [self.current, *(k for k in self._keys if k != self.current)]
        return ",".join(f"{k}:{base64.b64encode(self._keys[k]).decode()}" for k in order)


def _header(kid: str, nonce: bytes) -> bytes:
    encoded = kid.encode("ascii")
    return MAGIC + bytes([len(encoded)]) + encoded + nonce


def _split(blob: bytes) -> tuple[str, bytes, bytes, bytes]:
    """(key id, header, nonce, ciphertext) of ``blob``, or DecryptionError."""
    if len(blob) < len(MAGIC) + 1 or not blob.startswith(MAGIC):
        raise DecryptionError("not a GenAI Factory ciphertext")
    kid_len = blob[len(MAGIC)]
    start = len(MAGIC) + 1
    end = start + kid_len + NONCE_BYTES
    if len(blob) < end + 16:
        raise DecryptionError("truncated ciphertext")
    try:
        kid = blob[start : start + kid_len].decode("ascii")
    except UnicodeDecodeError:
        raise DecryptionError("malformed ciphertext header") from None
    return kid, blob[:end], blob[start + kid_len : end], blob[end:]


class AtRestCipher:
    """AES-256-GCM for stored data; encrypts with the current key, decrypts with any known one.

    Keys come from ``keyring``, or ``keys`` (a SecretStr in keyring form), or the environment
    variable ``keys_env``. ``context`` / ``aad`` binds a ciphertext to where it is stored.
    """

    def __init__(
        self,
        *,
        keys_env: str = DEFAULT_DATA_KEYS_ENV,
        keys: SecretStr | None = None,
        keyring: Keyring | None = None,
    ) -> None:
        self.keys_env = keys_env
        if keyring is not None:
            self.keyring = keyring
        elif keys is not None:
            self.keyring = Keyring.parse(keys.get_secret_value(), source="keys")
        else:
            self.keyring = Keyring.from_env(keys_env)
        self._aead = {kid: AESGCM(self.keyring.key(kid) or b"") for kid in self.keyring.key_ids}

    def to_params(self) -> dict[str, str]:
        return {"keys_env": self.keys_env}

    def encrypt(self, plaintext: bytes, aad: bytes = b"") -> bytes:
        kid = self.keyring.current
        nonce = secrets.token_bytes(NONCE_BYTES)
        header = _header(kid, nonce)
        return header + self._aead[kid].encrypt(nonce, plaintext, header + b"|" + aad)

    def decrypt(self, blob: bytes, aad: bytes = b"") -> bytes:
        kid, header, nonce, ciphertext = _split(blob)
        aead = self._aead.get(kid)
        if aead is None:
            raise DecryptionError(f"unknown encryption key id {kid!r}")
        try:
            return aead.decrypt(nonce, ciphertext, header + b"|" + aad)
        except InvalidTag:
            raise DecryptionError(
                f"ciphertext sealed with key {kid!r} failed authentication "
                "(tampered, or another context)"
            ) from None

    def key_id_of(self, blob: bytes) -> str:
        return _split(blob)[0]

    def needs_reencryption(self, blob: bytes) -> bool:
        """True when ``blob`` was sealed with a key other than the current one."""
        return self.key_id_of(blob) != self.keyring.current

    def reencrypt(self, blob: bytes, aad: bytes = b"") -> bytes:
        """``blob`` sealed again under the current key (unchanged if it already is)."""
        if not self.needs_reencryption(blob):
            return blob
        return self.encrypt(self.decrypt(blob, aad), aad)

    # text forms for TEXT columns and JSON documents

    def encrypt_text(self, plaintext: str, *, context: str = "") -> str:
        blob = self.encrypt(plaintext.encode("utf-8"), context.encode("utf-8"))
        return TEXT_PREFIX + base64.urlsafe_b64encode(blob).decode("ascii")

    def _blob(self, text: str) -> bytes:
        if not text.startswith(TEXT_PREFIX):
            raise DecryptionError("not a GenAI Factory ciphertext")
        try:
            return base64.urlsafe_b64decode(text[len(TEXT_PREFIX) :].encode("ascii"))
        except (binascii.Error, UnicodeEncodeError, ValueError):
            raise DecryptionError("malformed ciphertext encoding") from None

    def decrypt_text(self, text: str, *, context: str = "") -> str:
        return self.decrypt(self._blob(text), context.encode("utf-8")).decode("utf-8")

    def key_id_of_text(self, text: str) -> str:
        return self.key_id_of(self._blob(text))

    def reencrypt_text(self, text: str, *, context: str = "") -> str:
        if self.key_id_of_text(text) == self.keyring.current:
            return text
        return self.encrypt_text(self.decrypt_text(text, context=context), context=context)
