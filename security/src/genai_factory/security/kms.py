"""A master-key provider backed by AWS KMS (or any server that speaks KMS's JSON API).

:class:`AWSKMSMasterKeys` is a :class:`~genai_factory.security.secret_store.MasterKeyProvider`:
the master key never leaves KMS. ``wrap`` is KMS ``Encrypt``, ``unwrap`` is ``Decrypt`` (with the
expected ``KeyId``, so KMS itself refuses a blob wrapped under another key) and
``generate_data_key`` is ``GenerateDataKey`` (a fresh AES-256 data key, returned in the clear and
wrapped, in one call). The caller's additional authenticated data travels as KMS's encryption
context (``{"gf-aad": base64(aad)}``), which KMS binds to the ciphertext: a wrapped key moved to
another secret does not decrypt.

Requests are plain HTTPS POSTs of the documented wire format (``X-Amz-Target:
TrentService.<Action>``, ``application/x-amz-json-1.1``) signed with AWS Signature Version 4
(implemented here; no boto3), sent with an async ``httpx`` client. Credentials come from the
environment (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` and optionally
``AWS_SESSION_TOKEN``, or variables named in the config), read when the provider is built; they
never appear in errors or logs.

Rotation: point ``key_id`` at a new KMS key and keep the old one enabled; each
``EncryptedSecretStore.rotate_master_key()`` re-wraps the data keys that name the old key (KMS
decrypts them with the old key, encrypts them with the new one). KMS's own automatic rotation of
a key's material needs nothing from us: the key id stays the same and old blobs still decrypt.

Example (needs a KMS endpoint and credentials)::

    master = AWSKMSMasterKeys("alias/gf-secrets", region="eu-west-1")
    store = EncryptedSecretStore(".gf-data/secrets.json", master=master)
    await store.set("openai-api-key", "sk-...")
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import SecretStr

from genai_factory.security.encryption import DecryptionError
from genai_factory.shared.errors import ConfigError, Forbidden, ServiceUnavailable, ValidationError
from genai_factory.shared.sigv4 import sign_v4

__all__ = ["AWSKMSMasterKeys"]

logger = logging.getLogger(__name__)

_SERVICE = "kms"
_CONTENT_TYPE = "application/x-amz-json-1.1"
_AAD_FIELD = "gf-aad"
# KMS errors that mean "this blob does not open with this key and context": the caller's data,
# not the service, is at fault (DecryptionError, like the local provider)
_UNDECRYPTABLE = {
    "InvalidCiphertextException",
    "IncorrectKeyException",
    "NotFoundException",
    "KMSInvalidStateException",
    "DisabledException",
}
# KMS errors that mean the credentials or their permissions are wrong (an operator's problem)
_DENIED = {
    "AccessDeniedException",
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "MissingAuthenticationToken",
    "ExpiredTokenException",
    "InvalidClientTokenId",
}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise ServiceUnavailable(f"KMS answered without {what}", retry_after=1.0)
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error:
        raise ServiceUnavailable(f"KMS answered a malformed {what}", retry_after=1.0) from None


class AWSKMSMasterKeys:
    """Master keys in AWS KMS, through its JSON API over HTTPS with SigV4 (see the module doc).

    ``key_id`` is the current master key (key id, ARN or ``alias/...``); ``endpoint_url``
    defaults to ``https://kms.<region>.amazonaws.com`` (set it for a VPC endpoint or a
    KMS-compatible server). ``*_env`` name the environment variables holding the credentials.
    """

    def __init__(
        self,
        key_id: str,
        *,
        region: str = "us-east-1",
        endpoint_url: str | None = None,
        access_key_id_env: str = "AWS_ACCESS_KEY_ID",
        secret_access_key_env: str = "AWS_SECRET_ACCESS_KEY",  # noqa: S107 (a variable's name)
        session_token_env: str | None = "AWS_SESSION_TOKEN",  # noqa: S107 (a variable's name)
        timeout_s: float = 10.0,
    ) -> None:
        if not key_id or not isinstance(key_id, str):
            raise ConfigError("'key_id' must name a KMS key", param="key_id")
        if not region or not all(c.isalnum() or c == "-" for c in region):
            raise ConfigError(f"invalid AWS region {region!r}", param="region")
        url = endpoint_url or f"https://kms.{region}.amazonaws.com/"
        if urlsplit(url).scheme not in ("https", "http") or not urlsplit(url).hostname:
            raise ConfigError("'endpoint_url' must be an http(s) URL", param="endpoint_url")
        if not timeout_s > 0:
            raise ConfigError("'timeout_s' must be positive", param="timeout_s")
        access_key = os.environ.get(access_key_id_env)
        secret_key = os.environ.get(secret_access_key_env)
        if not access_key or not secret_key:
            raise ConfigError(
                f"AWS credentials missing: set ${access_key_id_env} and ${secret_access_key_env}",
                param="access_key_id_env",
            )
        self.key_id = key_id
        self.region = region
        self.endpoint_url = url
        self.access_key_id_env = access_key_id_env
        self.secret_access_key_env = secret_access_key_env
        self.session_token_env = session_token_env
        self.timeout_s = timeout_s
        self._access_key_id = access_key
        self._secret_access_key = SecretStr(secret_key)
        token = os.environ.get(session_token_env) if session_token_env else None
        self._session_token = SecretStr(token) if token else None
        self._client: httpx.AsyncClient | None = None

    def to_params(self) -> dict[str, Any]:
        """The config that rebuilds this provider: variable names only, never credentials."""
        return {
            "key_id": self.key_id,
            "region": self.region,
            "endpoint_url": self.endpoint_url,
            "access_key_id_env": self.access_key_id_env,
            "secret_access_key_env": self.secret_access_key_env,
            "session_token_env": self.session_token_env,
            "timeout_s": self.timeout_s,
        }

    def __repr__(self) -> str:
        return f"AWSKMSMasterKeys(key_id={self.key_id!r}, endpoint_url={self.endpoint_url!r})"

    @property
    def current_key_id(self) -> str:
        return self.key_id

    @staticmethod
    def _context(aad: bytes) -> dict[str, str]:
        return {_AAD_FIELD: _b64(aad)}

    async def call(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        """One signed KMS JSON API call (``TrentService.<action>``); the parsed JSON answer.

        Raises DecryptionError (the blob does not open with that key and context), Forbidden
        (credentials or permissions), ValidationError (a request KMS rejected as invalid), or
        ServiceUnavailable (network, throttling, KMS errors).
        """
        if not action.isalnum():
            raise ValidationError("invalid KMS action", param="action")
        body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
        headers = sign_v4(
            method="POST",
            url=self.endpoint_url,
            headers={"content-type": _CONTENT_TYPE, "x-amz-target": f"TrentService.{action}"},
            body=body,
            region=self.region,
            service=_SERVICE,
            access_key_id=self._access_key_id,
            secret_access_key=self._secret_access_key.get_secret_value(),
            session_token=(self._session_token.get_secret_value() if self._session_token else None),
            sign_payload_hash=True,
        )
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.timeout_s)
        try:
            reply = await self._client.post(self.endpoint_url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise ServiceUnavailable(
                f"KMS unreachable: {type(exc).__name__}", retry_after=1.0
            ) from None
        try:
            answer = reply.json() if reply.content else {}
        except ValueError:
            answer = {}
        if not isinstance(answer, dict):
            answer = {}
        if reply.status_code == 200:
            return answer
        kind = str(answer.get("__type") or answer.get("code") or reply.status_code)
        kind = kind.rsplit("#", 1)[-1]  # "com.amazonaws.kms#NotFoundException"
        message = f"KMS {action} failed: {kind}"
        logger.warning("KMS call failed", extra={"kms_action": action, "kms_error": kind})
        if kind in _UNDECRYPTABLE:
            raise DecryptionError(message)
        if kind in _DENIED or reply.status_code in (401, 403):
            raise Forbidden(message)
        if reply.status_code < 500 and kind not in ("ThrottlingException", "LimitExceeded"):
            raise ValidationError(message)
        raise ServiceUnavailable(message, retry_after=1.0)

    async def wrap(self, data_key: bytes, aad: bytes) -> tuple[str, bytes]:
        """KMS ``Encrypt`` of ``data_key`` under the current key, bound to ``aad``."""
        answer = await self.call(
            "Encrypt",
            {
                "KeyId": self.key_id,
                "Plaintext": _b64(data_key),
                "EncryptionContext": self._context(aad),
            },
        )
        return self.key_id, _unb64(answer.get("CiphertextBlob"), "CiphertextBlob")

    async def unwrap(self, key_id: str, wrapped: bytes, aad: bytes) -> bytes:
        """KMS ``Decrypt``; KMS refuses a blob not wrapped by ``key_id`` or not bound to ``aad``."""
        answer = await self.call(
            "Decrypt",
            {
                "KeyId": key_id,
                "CiphertextBlob": _b64(wrapped),
                "EncryptionContext": self._context(aad),
            },
        )
        return _unb64(answer.get("Plaintext"), "Plaintext")

    async def generate_data_key(self, aad: bytes) -> tuple[bytes, str, bytes]:
        """KMS ``GenerateDataKey`` (AES-256): (the key in the clear, key id, the wrapped key)."""
        answer = await self.call(
            "GenerateDataKey",
            {"KeyId": self.key_id, "KeySpec": "AES_256", "EncryptionContext": self._context(aad)},
        )
        plaintext = _unb64(answer.get("Plaintext"), "Plaintext")
        if len(plaintext) != 32:
            raise ServiceUnavailable("KMS returned a data key of the wrong size", retry_after=1.0)
        return plaintext, self.key_id, _unb64(answer.get("CiphertextBlob"), "CiphertextBlob")

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
