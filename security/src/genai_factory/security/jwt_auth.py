"""JWT bearer tokens verified against a JWKS: RS256/ES256/EdDSA (and RS/PS/ES 384-512).

What is checked, in order: one well-formed bearer credential; the header's ``alg`` is on the
allow-list (which can never hold ``none`` or an HMAC algorithm, so a token "signed" with the
public key as an HMAC secret is refused before any key is touched) and matches the key's type and
curve; no ``crit`` extensions; the key id is in the JWKS (refetched, rate-limited, when unknown);
the signature; then ``iss``, ``aud``, ``exp``, ``nbf`` and ``iat`` with a bounded clock skew, and
optionally a maximum token lifetime. Keys embedded in the token (``jwk``, ``jku``, ``x5u``) are
never used.

Example:
    >>> import asyncio, time, jwt
    >>> from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    >>> from genai_factory.security.jwt_auth import JWTAuthenticator, public_jwk
    >>> private = Ed25519PrivateKey.generate()
    >>> auth = JWTAuthenticator(issuer="https://idp.test", audience="gf",
    ...                         jwks={"keys": [public_jwk(private.public_key(), kid="k1")]})
    >>> token = jwt.encode({"sub": "alice", "iss": "https://idp.test", "aud": "gf",
    ...                     "exp": time.time() + 60, "roles": ["viewer"]},
    ...                    private, algorithm="EdDSA", headers={"kid": "k1"})
    >>> principal = asyncio.run(auth.authenticate({"authorization": f"Bearer {token}"}))
    >>> principal.subject, sorted(principal.roles)
    ('alice', ['viewer'])
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from genai_factory.security.credentials import bearer_credential
from genai_factory.security.jwks import JWKSCache, KeySource, StaticJWKS
from genai_factory.shared.errors import ConfigError, Unauthorized
from genai_factory.shared.models import Principal

__all__ = [
    "ASYMMETRIC_ALGORITHMS",
    "MAX_LEEWAY_S",
    "JWTAuthenticator",
    "public_jwk",
]

logger = logging.getLogger(__name__)

# The only algorithms a verifier may accept: asymmetric signatures whose key type we can check.
_FAMILY: dict[str, str] = {
    "RS256": "RSA",
    "RS384": "RSA",
    "RS512": "RSA",
    "PS256": "RSA",
    "PS384": "RSA",
    "PS512": "RSA",
    "ES256": "EC",
    "ES384": "EC",
    "ES512": "EC",
    "EdDSA": "OKP",
}
ASYMMETRIC_ALGORITHMS = frozenset(_FAMILY)
_CURVE = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521", "EdDSA": "Ed25519"}
MAX_LEEWAY_S = 300.0
_MAX_CLAIM_ITEMS = 100
_MAX_CLAIM_CHARS = 200


def public_jwk(
    key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey,
    *,
    kid: str,
    alg: str | None = None,
) -> dict[str, Any]:
    """The public JWK (RFC 7517) of ``key``, with ``kid``, ``use: sig`` and, if given, ``alg``."""
    if isinstance(key, rsa.RSAPublicKey):
        data: dict[str, Any] = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key))
    elif isinstance(key, ec.EllipticCurvePublicKey):
        data = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key))
    else:
        data = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(key))
    data.update({"kid": kid, "use": "sig"})
    if alg is not None:
        data["alg"] = alg
    return data


def _string_list(value: Any, claim: str) -> frozenset[str]:
    if value is None:
        return frozenset()
    if isinstance(value, str):
        items: Iterable[Any] = value.split()
    elif isinstance(value, list):
        items = value
    else:
        raise Unauthorized(f"malformed '{claim}' claim", code="invalid_token")
    result = frozenset(items)
    if len(result) > _MAX_CLAIM_ITEMS or not all(
        isinstance(item, str) and 0 < len(item) <= _MAX_CLAIM_CHARS for item in result
    ):
        raise Unauthorized(f"malformed '{claim}' claim", code="invalid_token")
    return result


def _optional_string(claims: Mapping[str, Any], claim: str) -> str | None:
    value = claims.get(claim)
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= _MAX_CLAIM_CHARS:
        raise Unauthorized(f"malformed '{claim}' claim", code="invalid_token")
    return value


class JWTAuthenticator:
    """Authenticator for ``Authorization: Bearer <JWT>`` against one issuer's JWKS.

    Give either ``jwks_url`` (fetched and cached) or ``jwks`` (a fixed set). ``audience`` may be
    one value or several (any one must match). ``leeway_s`` (at most 300) absorbs clock skew.
    ``max_lifetime_s`` refuses tokens whose ``exp - iat`` is longer. Role, scope, org and team
    claim names are configurable; ``attribute_claims`` are copied into ``Principal.attributes``.
    """

    def __init__(
        self,
        *,
        issuer: str,
        audience: str | Sequence[str],
        jwks_url: str | None = None,
        jwks: dict[str, Any] | None = None,
        algorithms: Sequence[str] = ("RS256", "ES256", "EdDSA"),
        leeway_s: float = 30.0,
        max_lifetime_s: float | None = None,
        roles_claim: str = "roles",
        org_claim: str = "org_id",
        team_claim: str = "team_id",
        attribute_claims: Sequence[str] = ("clearance", "region"),
        jwks_ttl_s: float = 300.0,
        jwks_min_refetch_interval_s: float = 30.0,
        jwks_ca_file: str | None = None,
    ) -> None:
        refused = [alg for alg in algorithms if alg not in ASYMMETRIC_ALGORITHMS]
        if refused or not algorithms:
            raise ConfigError(
                f"JWT algorithms must be asymmetric ({', '.join(sorted(ASYMMETRIC_ALGORITHMS))}); "
                f"refused: {', '.join(refused) or 'an empty list'}",
                param="algorithms",
            )
        if not (0 <= leeway_s <= MAX_LEEWAY_S) or math.isnan(leeway_s):
            raise ConfigError(
                f"leeway_s must be between 0 and {MAX_LEEWAY_S:g}, got {leeway_s}", param="leeway_s"
            )
        if not issuer:
            raise ConfigError("a JWT issuer is required", param="issuer")
        audiences = [audience] if isinstance(audience, str) else list(audience)
        if not audiences or not all(audiences):
            raise ConfigError("a JWT audience is required", param="audience")
        if (jwks_url is None) == (jwks is None):
            raise ConfigError("give exactly one of jwks_url or jwks", param="jwks_url")
        self.issuer = issuer
        self.audience = audience
        self.jwks_url = jwks_url
        self.jwks = jwks
        self.algorithms = tuple(algorithms)
        self.leeway_s = leeway_s
        self.max_lifetime_s = max_lifetime_s
        self.roles_claim = roles_claim
        self.org_claim = org_claim
        self.team_claim = team_claim
        self.attribute_claims = tuple(attribute_claims)
        self.jwks_ttl_s = jwks_ttl_s
        self.jwks_min_refetch_interval_s = jwks_min_refetch_interval_s
        self.jwks_ca_file = jwks_ca_file
        self._audiences = audiences
        self.keys: KeySource
        if jwks_url is not None:
            self.keys = JWKSCache(
                jwks_url,
                ttl_s=jwks_ttl_s,
                min_refetch_interval_s=jwks_min_refetch_interval_s,
                ca_file=jwks_ca_file,
            )
        else:
            assert jwks is not None
            self.keys = StaticJWKS(jwks)
        self._loaded: dict[tuple[str, ...], jwt.PyJWK] = {}

    def accepts(self, credential: str) -> bool:
        """Whether ``credential`` is shaped like a JWS compact token (three dot-separated parts)."""
        return credential.count(".") == 2

    def _pyjwk(self, jwk: dict[str, Any], alg: str) -> jwt.PyJWK:
        """The key loaded for ``alg`` after checking that the key may verify that algorithm."""
        if jwk.get("kty") != _FAMILY[alg]:
            raise Unauthorized("token algorithm does not match its key", code="invalid_token")
        if "alg" in jwk and jwk["alg"] != alg:
            raise Unauthorized("token algorithm does not match its key", code="invalid_token")
        if alg in _CURVE and jwk.get("crv") != _CURVE[alg]:
            raise Unauthorized("token algorithm does not match its key", code="invalid_token")
        # the public numbers identify the key; cheaper than serialising the whole JWK per call
        cache_key = tuple(
            str(jwk.get(member)) for member in ("kid", "kty", "crv", "n", "e", "x", "y")
        )
        cache_key += (alg,)
        loaded = self._loaded.get(cache_key)
        if loaded is None:
            try:
                loaded = jwt.PyJWK(jwk, algorithm=alg)
            except jwt.PyJWTError:
                logger.warning("jwk unusable", extra={"kid": jwk.get("kid")})
                raise Unauthorized("unusable signing key", code="invalid_token") from None
            if len(self._loaded) > 4 * 100:  # bounded: a JWKS holds at most 100 keys
                self._loaded.clear()
            self._loaded[cache_key] = loaded
        return loaded

    async def authenticate(self, headers: Mapping[str, str]) -> Principal:
        return await self.authenticate_credential(bearer_credential(headers))

    async def authenticate_credential(self, token: str) -> Principal:
        claims = await self.verify(token)
        return self._principal(claims)

    async def verify(self, token: str) -> dict[str, Any]:
        """The verified claims of ``token``, or Unauthorized saying what was wrong."""
        if token.count(".") != 2:
            raise Unauthorized("malformed token", code="invalid_token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthorized("malformed token", code="invalid_token") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            logger.info("jwt rejected", extra={"reason": "algorithm", "alg": str(alg)[:20]})
            raise Unauthorized("token algorithm not accepted", code="invalid_token")
        if "crit" in header:
            raise Unauthorized("unsupported critical token extensions", code="invalid_token")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise Unauthorized("malformed token", code="invalid_token")
        key = self._pyjwk(await self.keys.key_for(kid), alg)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                audience=self._audiences,
                issuer=self.issuer,
                leeway=self.leeway_s,
                options={
                    "require": ["exp", "iss", "aud", "sub"],
                    "enforce_minimum_key_length": True,
                },
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("token expired", code="token_expired") from None
        except jwt.ImmatureSignatureError:
            raise Unauthorized("token not yet valid", code="token_not_yet_valid") from None
        except jwt.InvalidAudienceError:
            raise Unauthorized("token audience not accepted", code="invalid_audience") from None
        except jwt.InvalidIssuerError:
            raise Unauthorized("token issuer not accepted", code="invalid_issuer") from None
        except jwt.InvalidSignatureError:
            raise Unauthorized("token signature invalid", code="invalid_signature") from None
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthorized(
                f"token lacks the '{exc.claim}' claim", code="invalid_token"
            ) from None
        except jwt.PyJWTError:
            raise Unauthorized("invalid token", code="invalid_token") from None
        if self.max_lifetime_s is not None:
            issued_at = claims.get("iat", claims.get("nbf"))
            if not isinstance(issued_at, int | float) or (
                claims["exp"] - issued_at > self.max_lifetime_s
            ):
                raise Unauthorized("token lifetime too long", code="invalid_token")
        return claims

    def _principal(self, claims: Mapping[str, Any]) -> Principal:
        subject = claims["sub"]
        if not isinstance(subject, str) or not 0 < len(subject) <= _MAX_CLAIM_CHARS:
            raise Unauthorized("malformed 'sub' claim", code="invalid_token")
        scope_claim = "scope" if "scope" in claims else "scp"
        client_id = _optional_string(claims, "client_id")
        service = client_id is not None and client_id == subject
        attributes = {
            name: value
            for name in self.attribute_claims
            if (value := _optional_string(claims, name)) is not None
        }
        return Principal(
            subject=subject,
            org_id=_optional_string(claims, self.org_claim),
            team_id=_optional_string(claims, self.team_claim),
            user_id=None if service else subject,
            roles=_string_list(claims.get(self.roles_claim), self.roles_claim),
            scopes=_string_list(claims.get(scope_claim), scope_claim),
            attributes=attributes,
            auth_method="oauth2" if service else "jwt",
        )

    async def aclose(self) -> None:
        if isinstance(self.keys, JWKSCache):
            await self.keys.aclose()
