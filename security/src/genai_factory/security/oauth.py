"""OAuth2 client credentials for service accounts: ``POST /oauth/token`` -> a signed JWT.

A service account (a batch job, another service) holds a ``client_id`` and a ``client_secret``;
the secret is shown once at registration and kept only as an HMAC-SHA256 under the server
secret, compared in constant time. The Starlette app answers RFC 6749 section 4.4 requests
(client authentication by HTTP Basic or form fields, never both), issues short-lived access
tokens signed with an asymmetric key (ES256 by default), and publishes the public keys at
``/.well-known/jwks.json`` so :class:`~genai_factory.security.jwt_auth.JWTAuthenticator` can
verify them. Errors are OpenAI-shaped JSON (the platform's one error shape) whose ``code`` is the
RFC 6749 error (``invalid_client``, ``invalid_scope``, ``unsupported_grant_type``, ...).

Example:
    >>> from pydantic import SecretStr
    >>> from genai_factory.security.oauth import ServiceAccountRegistry
    >>> accounts = ServiceAccountRegistry(secret=SecretStr("s" * 32))
    >>> client_secret = accounts.register("batch-job", roles=["invoker"], scopes=["model:invoke"])
    >>> accounts.verify("batch-job", client_secret).roles
    ('invoker',)
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import secrets
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from genai_factory.security.apikeys import DEFAULT_SECRET_ENV, _resolve_secret, hash_api_key
from genai_factory.security.jwt_auth import ASYMMETRIC_ALGORITHMS, public_jwk
from genai_factory.shared.errors import (
    BadRequest,
    ConfigError,
    Conflict,
    GFError,
    PayloadTooLarge,
    Unauthorized,
    to_http,
)

__all__ = [
    "ServiceAccount",
    "ServiceAccountRegistry",
    "TokenSigner",
    "create_token_app",
]

logger = logging.getLogger(__name__)

DEFAULT_SIGNING_KEY_ENV = "GF_SECURITY_OAUTH_SIGNING_KEY"
MAX_TOKEN_REQUEST_BYTES = 4096
_NO_STORE = {"cache-control": "no-store", "pragma": "no-cache"}

_KEY_FOR_ALG: dict[str, tuple[type[Any], str | None]] = {
    "RS256": (rsa.RSAPrivateKey, None),
    "RS384": (rsa.RSAPrivateKey, None),
    "RS512": (rsa.RSAPrivateKey, None),
    "PS256": (rsa.RSAPrivateKey, None),
    "PS384": (rsa.RSAPrivateKey, None),
    "PS512": (rsa.RSAPrivateKey, None),
    "ES256": (ec.EllipticCurvePrivateKey, "secp256r1"),
    "ES384": (ec.EllipticCurvePrivateKey, "secp384r1"),
    "ES512": (ec.EllipticCurvePrivateKey, "secp521r1"),
    "EdDSA": (ed25519.Ed25519PrivateKey, None),
}


class TokenSigner:
    """Signs access tokens with one private key and publishes the matching public JWKS.

    The PEM private key comes from ``private_key_pem``, ``private_key_file`` or the environment
    variable ``private_key_env`` (in that order). ``retired_jwks`` keeps publishing old public
    keys after a signing-key rotation until the tokens they signed have expired.
    """

    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        kid: str,
        algorithm: str = "ES256",
        ttl_s: float = 900.0,
        private_key_pem: SecretStr | None = None,
        private_key_file: str | None = None,
        private_key_env: str = DEFAULT_SIGNING_KEY_ENV,
        retired_jwks: Sequence[dict[str, Any]] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        if algorithm not in ASYMMETRIC_ALGORITHMS:
            raise ConfigError(f"signing algorithm must be asymmetric, got {algorithm!r}")
        if not 0 < ttl_s <= 86_400:
            raise ConfigError(f"ttl_s must be in (0, 86400], got {ttl_s}", param="ttl_s")
        self.issuer = issuer
        self.audience = audience
        self.kid = kid
        self.algorithm = algorithm
        self.ttl_s = ttl_s
        self.private_key_file = private_key_file
        self.private_key_env = private_key_env
        self.retired_jwks = [dict(jwk) for jwk in retired_jwks]
        self._clock = clock
        self._key = self._load_key(private_key_pem)
        self._jwk = public_jwk(self._key.public_key(), kid=kid, alg=algorithm)

    def to_params(self) -> dict[str, Any]:
        """Config form; the private key is never dumped, only where it comes from."""
        params: dict[str, Any] = {
            "issuer": self.issuer,
            "audience": self.audience,
            "kid": self.kid,
            "algorithm": self.algorithm,
            "ttl_s": self.ttl_s,
            "private_key_env": self.private_key_env,
        }
        if self.private_key_file:
            params["private_key_file"] = self.private_key_file
        if self.retired_jwks:
            params["retired_jwks"] = self.retired_jwks
        return params

    def _load_key(self, pem: SecretStr | None) -> Any:
        import os

        if pem is not None:
            data, source = pem.get_secret_value().encode(), "private_key_pem"
        elif self.private_key_file:
            data, source = Path(self.private_key_file).read_bytes(), "private_key_file"
        else:
            data, source = os.environ.get(self.private_key_env, "").encode(), self.private_key_env
            if not data:
                raise ConfigError(
                    f"no token signing key: set ${self.private_key_env} to a PEM private key",
                    param=self.private_key_env,
                )
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError):
            # never echo the key material, only where it came from
            raise ConfigError(f"{source}: not a PEM private key", param=source) from None
        key_type, curve = _KEY_FOR_ALG[self.algorithm]
        if not isinstance(key, key_type) or (
            curve is not None and getattr(getattr(key, "curve", None), "name", None) != curve
        ):
            raise ConfigError(f"{source}: the key cannot sign {self.algorithm}", param=source)
        if isinstance(key, rsa.RSAPrivateKey) and key.key_size < 2048:
            raise ConfigError(f"{source}: RSA keys need at least 2048 bits", param=source)
        return key

    def jwks(self) -> dict[str, Any]:
        """The public keys to publish: the current one first, then the retired ones."""
        return {"keys": [self._jwk, *self.retired_jwks]}

    def sign(self, subject: str, claims: dict[str, Any] | None = None) -> tuple[str, int]:
        """A signed access token for ``subject`` with extra ``claims``, and its lifetime (s)."""
        now = int(self._clock())
        payload = {
            **(claims or {}),
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject,
            "iat": now,
            "nbf": now,
            "exp": now + int(self.ttl_s),
            "jti": uuid.uuid4().hex,
        }
        token = jwt.encode(
            payload, self._key, algorithm=self.algorithm, headers={"kid": self.kid, "typ": "JWT"}
        )
        return token, int(self.ttl_s)


@dataclass(frozen=True, slots=True)
class ServiceAccount:
    """A client of the token endpoint: what it may ask for, and the hash of its secret."""

    client_id: str
    secret_hash: str = field(repr=False)
    roles: tuple[str, ...] = ()
    scopes: tuple[str, ...] = ()
    org_id: str | None = None
    team_id: str | None = None


class ServiceAccountRegistry:
    """Service accounts by client id. ``accounts`` (from config) carry secret hashes, not secrets.

    ``secret``/``secret_env`` is the HMAC server secret, the same kind as API keys use.
    """

    def __init__(
        self,
        accounts: Sequence[dict[str, Any]] = (),
        *,
        secret_env: str = DEFAULT_SECRET_ENV,
        secret: SecretStr | None = None,
    ) -> None:
        self.secret_env = secret_env
        self._secret = _resolve_secret(secret, secret_env)
        self._accounts: dict[str, ServiceAccount] = {}
        for entry in accounts:
            account = ServiceAccount(
                client_id=str(entry["client_id"]),
                secret_hash=str(entry["secret_hash"]),
                roles=tuple(entry.get("roles", ())),
                scopes=tuple(entry.get("scopes", ())),
                org_id=entry.get("org_id"),
                team_id=entry.get("team_id"),
            )
            self._accounts[account.client_id] = account
        self._decoy = hash_api_key("decoy", self._secret)

    @property
    def accounts(self) -> list[dict[str, Any]]:
        return [
            {
                "client_id": a.client_id,
                "secret_hash": a.secret_hash,
                "roles": list(a.roles),
                "scopes": list(a.scopes),
                "org_id": a.org_id,
                "team_id": a.team_id,
            }
            for a in self._accounts.values()
        ]

    def to_params(self) -> dict[str, Any]:
        return {"accounts": self.accounts, "secret_env": self.secret_env}

    def register(
        self,
        client_id: str,
        *,
        roles: Sequence[str] = (),
        scopes: Sequence[str] = (),
        org_id: str | None = None,
        team_id: str | None = None,
    ) -> str:
        """Add an account and return its client secret: the only time it exists in the clear."""
        if not client_id or len(client_id) > 100 or ":" in client_id:
            raise ConfigError("client_id must be 1-100 characters without ':'", param="client_id")
        if client_id in self._accounts:
            raise Conflict(f"service account {client_id} already exists")
        client_secret = secrets.token_urlsafe(32)
        self._accounts[client_id] = ServiceAccount(
            client_id=client_id,
            secret_hash=hash_api_key(client_secret, self._secret),
            roles=tuple(roles),
            scopes=tuple(scopes),
            org_id=org_id,
            team_id=team_id,
        )
        logger.info("service account registered", extra={"client_id": client_id})
        return client_secret

    def verify(self, client_id: str, client_secret: str) -> ServiceAccount:
        """The account if the secret is right; Unauthorized (``invalid_client``) otherwise."""
        account = self._accounts.get(client_id)
        presented = hash_api_key(client_secret, self._secret)
        expected = account.secret_hash if account is not None else self._decoy
        if not hmac.compare_digest(presented, expected) or account is None:
            # name only clients we know: an unknown "client id" may be a secret pasted wrongly
            known = account.client_id if account is not None else "(unknown client)"
            logger.info("client authentication failed", extra={"client_id": known})
            raise Unauthorized("client authentication failed", code="invalid_client")
        return account


def _basic_credentials(value: str) -> tuple[str, str]:
    scheme, _, encoded = value.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        raise BadRequest("unsupported Authorization scheme", code="invalid_request")
    try:
        decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise BadRequest("malformed Basic credentials", code="invalid_request") from None
    client_id, sep, client_secret = decoded.partition(":")
    if not sep:
        raise BadRequest("malformed Basic credentials", code="invalid_request")
    # RFC 6749 2.3.1: both parts are form-urlencoded before Basic encoding
    return unquote(client_id.replace("+", " ")), unquote(client_secret.replace("+", " "))


async def _form(request: Request) -> dict[str, str]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise BadRequest(
            "the body must be application/x-www-form-urlencoded", code="invalid_request"
        )
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_TOKEN_REQUEST_BYTES):
        raise PayloadTooLarge("token request too large", code="invalid_request")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > MAX_TOKEN_REQUEST_BYTES:
            raise PayloadTooLarge("token request too large", code="invalid_request")
    try:
        pairs = parse_qsl(
            body.decode("ascii"),
            keep_blank_values=True,
            strict_parsing=bool(body),
            max_num_fields=8,
        )
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("malformed form body", code="invalid_request") from None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:  # RFC 6749 3.2: parameters must not repeat
            raise BadRequest(f"parameter '{name}' sent twice", code="invalid_request", param=name)
        form[name] = value
    return form


def _error(exc: BaseException, *, basic: bool = False) -> JSONResponse:
    status, body, headers = to_http(exc)
    if status == 401 and basic:
        headers["www-authenticate"] = 'Basic realm="genai-factory"'
    return JSONResponse(body, status_code=status, headers={**headers, **_NO_STORE})


def create_token_app(signer: TokenSigner, accounts: ServiceAccountRegistry) -> Starlette:
    """The token service: ``POST /oauth/token`` and ``GET /.well-known/jwks.json``."""

    async def token(request: Request) -> Response:
        authorization = request.headers.getlist("authorization")
        basic = bool(authorization)
        try:
            form = await _form(request)
            if form.get("grant_type") != "client_credentials":
                raise BadRequest(
                    "only grant_type=client_credentials is supported",
                    code="unsupported_grant_type",
                    param="grant_type",
                )
            if len(authorization) > 1:
                raise BadRequest("duplicate Authorization header", code="invalid_request")
            if basic and ("client_id" in form or "client_secret" in form):
                raise BadRequest(
                    "authenticate the client one way: Basic or form fields, not both",
                    code="invalid_request",
                )
            if basic:
                client_id, client_secret = _basic_credentials(authorization[0])
            else:
                client_id = form.get("client_id", "")
                client_secret = form.get("client_secret", "")
                if not client_id or not client_secret:
                    raise Unauthorized("client credentials missing", code="invalid_client")
            account = accounts.verify(client_id, client_secret)
            requested = form.get("scope")
            scopes = tuple(requested.split()) if requested else account.scopes
            if not set(scopes) <= set(account.scopes):
                raise BadRequest(
                    "requested scope exceeds what the client may ask for",
                    code="invalid_scope",
                    param="scope",
                )
            claims: dict[str, Any] = {
                "client_id": account.client_id,
                "roles": list(account.roles),
                "scope": " ".join(scopes),
            }
            if account.org_id:
                claims["org_id"] = account.org_id
            if account.team_id:
                claims["team_id"] = account.team_id
            access_token, expires_in = signer.sign(account.client_id, claims)
        except GFError as exc:
            return _error(exc, basic=basic)
        logger.info("access token issued", extra={"client_id": account.client_id})
        return JSONResponse(
            {
                "access_token": access_token,
                "token_type": "Bearer",
                "expires_in": expires_in,
                "scope": " ".join(scopes),
            },
            headers=_NO_STORE,
        )

    async def jwks(request: Request) -> Response:
        return JSONResponse(signer.jwks(), headers={"cache-control": "public, max-age=300"})

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        message = "not found" if status == 404 else "method not allowed" if status == 405 else ""
        body = {
            "error": {
                "message": message or "request failed",
                "type": "invalid_request_error" if status < 500 else "server_error",
                "param": None,
                "code": None,
            }
        }
        return JSONResponse(body, status_code=status)

    return Starlette(
        exception_handlers={HTTPException: http_error},
        routes=[
            Route("/oauth/token", token, methods=["POST"]),
            Route("/.well-known/jwks.json", jwks, methods=["GET"]),
        ],
    )
