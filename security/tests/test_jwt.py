"""JWT validation against a JWKS served by a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from genai_factory.security.jwks import JWKSCache, StaticJWKS, parse_jwks
from genai_factory.security.jwt_auth import JWTAuthenticator, public_jwk
from genai_factory.shared.contracts import Authenticator
from genai_factory.shared.errors import ConfigError, ServiceUnavailable, Unauthorized
from genai_factory.shared.factory import build_component, dump_component

ISSUER = "https://idp.test"
AUDIENCE = "genai-factory"

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def make_token(
    key: PrivateKey,
    alg: str,
    kid: str | None = "k1",
    *,
    headers: dict[str, Any] | None = None,
    **claims: Any,
) -> str:
    now = time.time()
    payload: dict[str, Any] = {
        "sub": "alice",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": int(now),
        "exp": int(now) + 300,
    }
    payload.update(claims)
    payload = {k: v for k, v in payload.items() if v is not None}
    all_headers = dict(headers or {})
    if kid is not None:
        all_headers["kid"] = kid
    return jwt.encode(payload, key, algorithm=alg, headers=all_headers)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def forge(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"forged") -> str:
    """A compact JWS assembled by hand, for tokens no honest library would sign."""
    parts = [json.dumps(header).encode(), json.dumps(payload).encode(), signature]
    return ".".join(b64url(part) for part in parts)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def keys(rsa_key: rsa.RSAPrivateKey, ec_key: Any, ed_key: Any) -> dict[str, PrivateKey]:
    return {"RS256": rsa_key, "ES256": ec_key, "EdDSA": ed_key, "PS256": rsa_key}


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA", "PS256"])
async def test_tokens_verify_against_a_served_jwks(
    alg: str,
    keys: dict[str, PrivateKey],
    jwks_server: Any,
    remember_secret: Callable[..., None],
) -> None:
    key = keys[alg]
    jwks_server.state.document = {"keys": [public_jwk(key.public_key(), kid="k1")]}
    auth = JWTAuthenticator(
        issuer=ISSUER,
        audience=AUDIENCE,
        jwks_url=jwks_server.jwks_url,
        algorithms=("RS256", "PS256", "ES256", "EdDSA"),
    )
    assert isinstance(auth, Authenticator)
    token = make_token(
        key,
        alg,
        roles=["viewer", "editor"],
        scope="model:invoke prompt:read",
        org_id="acme",
        team_id="ml",
        clearance="confidential",
    )
    remember_secret(token)
    principal = await auth.authenticate(bearer(token))
    assert principal.subject == "alice" and principal.user_id == "alice"
    assert principal.roles == {"viewer", "editor"}
    assert principal.scopes == {"model:invoke", "prompt:read"}
    assert (principal.org_id, principal.team_id) == ("acme", "ml")
    assert principal.attributes == {"clearance": "confidential"}
    assert principal.auth_method == "jwt"
    await auth.authenticate(bearer(token))
    assert jwks_server.state.hits == 1  # cached
    await auth.aclose()


async def test_an_unknown_kid_triggers_one_refetch_and_rotation_works(
    ec_key: ec.EllipticCurvePrivateKey, jwks_server: Any
) -> None:
    new_key = ec.generate_private_key(ec.SECP256R1())
    jwks_server.state.document = {"keys": [public_jwk(ec_key.public_key(), kid="old")]}
    auth = JWTAuthenticator(
        issuer=ISSUER,
        audience=AUDIENCE,
        jwks_url=jwks_server.jwks_url,
        jwks_min_refetch_interval_s=0,
    )
    await auth.authenticate(bearer(make_token(ec_key, "ES256", kid="old")))
    # the provider rotates: publishes the new key, then signs with it
    jwks_server.state.document = {
        "keys": [
            public_jwk(new_key.public_key(), kid="new"),
            public_jwk(ec_key.public_key(), kid="old"),
        ]
    }
    principal = await auth.authenticate(bearer(make_token(new_key, "ES256", kid="new")))
    assert principal.subject == "alice" and jwks_server.state.hits == 2
    await auth.aclose()


async def test_refetching_on_unknown_kids_is_rate_limited(
    ec_key: ec.EllipticCurvePrivateKey, jwks_server: Any
) -> None:
    clock = FakeClock()
    jwks_server.state.document = {"keys": [public_jwk(ec_key.public_key(), kid="k1")]}
    cache = JWKSCache(jwks_server.jwks_url, ttl_s=300, min_refetch_interval_s=30, clock=clock)
    await cache.key_for("k1")
    for _ in range(20):  # a flood of invented key ids
        with pytest.raises(Unauthorized, match="unknown signing key"):
            await cache.key_for("invented")
    assert jwks_server.state.hits == 1
    clock.now += 31
    with pytest.raises(Unauthorized):
        await cache.key_for("invented")
    assert jwks_server.state.hits == 2
    clock.now += 301  # expired: the next lookup refetches even for a known kid
    await cache.key_for("k1")
    assert jwks_server.state.hits == 3
    await cache.aclose()


async def test_concurrent_misses_share_one_fetch(
    ec_key: ec.EllipticCurvePrivateKey, jwks_server: Any
) -> None:
    jwks_server.state.document = {"keys": [public_jwk(ec_key.public_key(), kid="k1")]}
    cache = JWKSCache(jwks_server.jwks_url)
    results = await asyncio.gather(*(cache.key_for("k1") for _ in range(10)))
    assert all(r["kid"] == "k1" for r in results) and jwks_server.state.hits == 1
    await cache.aclose()


async def test_stale_keys_stand_in_while_the_provider_is_down_but_not_for_ever(
    ec_key: ec.EllipticCurvePrivateKey, jwks_server: Any
) -> None:
    clock = FakeClock()
    jwks_server.state.document = {"keys": [public_jwk(ec_key.public_key(), kid="k1")]}
    cache = JWKSCache(
        jwks_server.jwks_url, ttl_s=60, min_refetch_interval_s=10, max_stale_s=600, clock=clock
    )
    await cache.key_for("k1")
    jwks_server.state.status = 500
    clock.now += 61
    assert (await cache.key_for("k1"))["kid"] == "k1"  # fetch failed: stale key still serves
    clock.now += 700
    with pytest.raises(ServiceUnavailable):
        await cache.key_for("k1")
    await cache.aclose()


@pytest.mark.parametrize(
    "body",
    [b"not json", b'{"keys": "nope"}', b"[]", b'{"keys": [' + b'{"kty": "EC"},' * 30000 + b"{}]}"],
)
async def test_a_broken_or_oversized_jwks_is_refused(body: bytes, jwks_server: Any) -> None:
    jwks_server.state.raw = body
    cache = JWKSCache(jwks_server.jwks_url)
    with pytest.raises(ServiceUnavailable):
        await cache.key_for("k1")
    await cache.aclose()


async def test_an_unreachable_provider_is_service_unavailable() -> None:
    cache = JWKSCache("http://127.0.0.1:9/jwks.json", timeout_s=1)
    with pytest.raises(ServiceUnavailable):
        await cache.key_for("k1")
    await cache.aclose()


def test_parse_jwks_keeps_only_public_signature_keys(ec_key: Any, rsa_key: Any) -> None:
    good = public_jwk(ec_key.public_key(), kid="good")
    leaked_private = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key)) | {"kid": "priv"}
    keys = parse_jwks(
        {
            "keys": [
                good,
                leaked_private,
                good | {"kid": "enc", "use": "enc"},
                {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
                {"kty": "EC", "kid": 7},
                "junk",
            ]
        }
    )
    assert set(keys) == {"good"}


def test_only_https_or_loopback_jwks_urls_are_accepted() -> None:
    with pytest.raises(ConfigError, match="https"):
        JWKSCache("http://idp.example.com/jwks.json")
    assert JWKSCache("https://idp.example.com/jwks.json").url.startswith("https")
    assert JWKSCache("http://localhost:8080/jwks").url
    with pytest.raises(ConfigError):
        JWKSCache("https://idp.example.com/jwks.json", ttl_s=0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"algorithms": ["HS256"]}, "asymmetric"),
        ({"algorithms": ["none"]}, "asymmetric"),
        ({"algorithms": []}, "asymmetric"),
        ({"leeway_s": 301}, "leeway"),
        ({"leeway_s": -1}, "leeway"),
        ({"issuer": ""}, "issuer"),
        ({"audience": []}, "audience"),
        ({"jwks": None}, "exactly one"),
    ],
)
def test_unsafe_configurations_are_refused(kwargs: dict[str, Any], match: str) -> None:
    params: dict[str, Any] = {"issuer": ISSUER, "audience": AUDIENCE, "jwks": {"keys": []}}
    params.update(kwargs)
    with pytest.raises(ConfigError, match=match):
        JWTAuthenticator(**params)


@pytest.fixture
def static_auth(ec_key: ec.EllipticCurvePrivateKey) -> JWTAuthenticator:
    return JWTAuthenticator(
        issuer=ISSUER,
        audience=[AUDIENCE, "other-audience"],
        jwks={"keys": [public_jwk(ec_key.public_key(), kid="k1")]},
        algorithms=("ES256",),
        leeway_s=30,
    )


@pytest.mark.parametrize(
    ("claims", "accepted"),
    [
        ({"exp": -10}, True),  # expired 10 s ago: inside the 30 s skew
        ({"exp": -40}, False),
        ({"nbf": 10}, True),  # valid in 10 s: inside the skew
        ({"nbf": 60}, False),
        ({"iat": 60}, False),  # issued in the future
    ],
)
async def test_clock_skew_is_bounded_by_the_leeway(
    static_auth: JWTAuthenticator, ec_key: Any, claims: dict[str, int], accepted: bool
) -> None:
    now = int(time.time())
    token = make_token(ec_key, "ES256", **{k: now + v for k, v in claims.items()})
    if accepted:
        assert (await static_auth.authenticate(bearer(token))).subject == "alice"
    else:
        with pytest.raises(Unauthorized, match=r"expired|not yet valid|invalid token"):
            await static_auth.authenticate(bearer(token))


async def test_any_configured_audience_is_accepted(
    static_auth: JWTAuthenticator, ec_key: Any
) -> None:
    token = make_token(ec_key, "ES256", aud=["someone-else", "other-audience"])
    assert (await static_auth.authenticate(bearer(token))).subject == "alice"


@pytest.mark.parametrize("missing", ["exp", "iss", "aud", "sub"])
async def test_required_claims_must_be_present(
    static_auth: JWTAuthenticator, ec_key: Any, missing: str
) -> None:
    token = make_token(ec_key, "ES256", **{missing: None})
    with pytest.raises(Unauthorized, match=f"'{missing}'"):
        await static_auth.authenticate(bearer(token))


@pytest.mark.parametrize(
    "claims",
    [
        {"roles": "admin"},  # a string where a list belongs... split into one role: allowed
        {"roles": [1, 2]},
        {"roles": {"admin": True}},
        {"roles": ["x" * 500]},
        {"org_id": 5},
        {"sub": ""},
        {"scp": 7},
    ],
)
async def test_malformed_claims_are_refused(
    static_auth: JWTAuthenticator, ec_key: Any, claims: dict[str, Any]
) -> None:
    token = make_token(ec_key, "ES256", **claims)
    if claims == {"roles": "admin"}:
        assert (await static_auth.authenticate(bearer(token))).roles == {"admin"}
        return
    with pytest.raises(Unauthorized):
        await static_auth.authenticate(bearer(token))


async def test_client_credentials_tokens_become_service_principals(
    static_auth: JWTAuthenticator, ec_key: Any
) -> None:
    token = make_token(ec_key, "ES256", sub="batch", client_id="batch", scp=["model:invoke"])
    principal = await static_auth.authenticate(bearer(token))
    assert principal.auth_method == "oauth2" and principal.user_id is None
    assert principal.scopes == {"model:invoke"}


async def test_max_lifetime_refuses_long_lived_tokens(ec_key: Any) -> None:
    auth = JWTAuthenticator(
        issuer=ISSUER,
        audience=AUDIENCE,
        jwks={"keys": [public_jwk(ec_key.public_key(), kid="k1")]},
        algorithms=("ES256",),
        max_lifetime_s=3600,
    )
    now = int(time.time())
    assert (await auth.authenticate(bearer(make_token(ec_key, "ES256", exp=now + 600)))).subject
    with pytest.raises(Unauthorized, match="lifetime"):
        await auth.authenticate(bearer(make_token(ec_key, "ES256", exp=now + 86_400)))
    with pytest.raises(Unauthorized, match="lifetime"):
        await auth.authenticate(bearer(make_token(ec_key, "ES256", iat=None)))


async def test_a_token_without_kid_needs_a_single_key_set(ec_key: Any) -> None:
    single = StaticJWKS({"keys": [public_jwk(ec_key.public_key(), kid="k1")]})
    assert (await single.key_for(None))["kid"] == "k1"
    other = ec.generate_private_key(ec.SECP256R1())
    double = StaticJWKS(
        {
            "keys": [
                public_jwk(ec_key.public_key(), kid="k1"),
                public_jwk(other.public_key(), kid="k2"),
            ]
        }
    )
    with pytest.raises(Unauthorized):
        await double.key_for(None)
    with pytest.raises(ConfigError):
        StaticJWKS({"nokeys": []})


@pytest.mark.parametrize(
    ("header_alg", "jwk_kind"),
    [
        ("ES256", "rsa"),  # EC algorithm, RSA key
        ("RS256", "ec"),
        ("ES256", "ec384"),  # right family, wrong curve
        ("RS256", "rsa-ps-only"),  # the key says alg PS256
    ],
)
async def test_the_algorithm_must_fit_the_key(
    header_alg: str, jwk_kind: str, rsa_key: Any, ec_key: Any
) -> None:
    ec384 = ec.generate_private_key(ec.SECP384R1())
    jwks = {
        "rsa": public_jwk(rsa_key.public_key(), kid="k1"),
        "ec": public_jwk(ec_key.public_key(), kid="k1"),
        "ec384": public_jwk(ec384.public_key(), kid="k1"),
        "rsa-ps-only": public_jwk(rsa_key.public_key(), kid="k1", alg="PS256"),
    }[jwk_kind]
    auth = JWTAuthenticator(
        issuer=ISSUER, audience=AUDIENCE, jwks={"keys": [jwks]}, algorithms=("RS256", "ES256")
    )
    now = int(time.time())
    payload = {"sub": "alice", "iss": ISSUER, "aud": AUDIENCE, "exp": now + 60}
    token = forge({"alg": header_alg, "kid": "k1"}, payload)
    with pytest.raises(Unauthorized, match="does not match its key"):
        await auth.authenticate(bearer(token))


def test_the_authenticator_round_trips_through_config(ec_key: Any) -> None:
    spec = {
        "type": "genai_factory.security.jwt_auth:JWTAuthenticator",
        "params": {
            "issuer": ISSUER,
            "audience": AUDIENCE,
            "jwks_url": "https://idp.example.com/jwks.json",
            "leeway_s": 10.0,
        },
    }
    built = build_component(spec, Authenticator)
    assert dump_component(build_component(dump_component(built))) == dump_component(built)
    assert built.leeway_s == 10.0
