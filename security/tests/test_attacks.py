"""The attack corpus: what an attacker sends, and that every one of them is refused.

Credentials: missing, malformed, expired, not yet valid, wrong audience, wrong issuer, tampered,
re-signed with another key, ``alg=none``, algorithm confusion (HS256 keyed with the public key),
embedded keys, kid injection, API keys after revocation or rotation. Headers: CRLF and NUL
injection, duplicate, folded and oversized Authorization headers, two credentials at once.
Authorisation: privilege escalation through role edits, and the full RBAC matrix of the example
policy.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from genai_factory.security.apikeys import APIKeyAuthenticator, APIKeyManager
from genai_factory.security.authz import PolicyAuthorizer, RoleAdministrator
from genai_factory.security.composite import CompositeAuthenticator
from genai_factory.security.credentials import MAX_CREDENTIAL_HEADER_BYTES, bearer_credential
from genai_factory.security.jwt_auth import JWTAuthenticator, public_jwk
from genai_factory.security.keystore import SQLiteAPIKeyStore
from genai_factory.shared.errors import Forbidden, GFError, Unauthorized, to_http
from genai_factory.shared.models import Principal

ISSUER = "https://idp.test"
AUDIENCE = "genai-factory"
EXAMPLE_POLICY = Path(__file__).resolve().parents[1] / "examples" / "policy.yaml"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "sub": "mallory",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 300,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def forge(
    header: dict[str, Any], payload: dict[str, Any], sign: Callable[[bytes], bytes] | None = None
) -> str:
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}"
    signature = sign(signing_input.encode()) if sign else b""
    return f"{signing_input}.{b64url(signature)}"


@pytest.fixture
def rsa_jwk(rsa_key: rsa.RSAPrivateKey) -> dict[str, Any]:
    return public_jwk(rsa_key.public_key(), kid="k1")


@pytest.fixture
def auth(rsa_jwk: dict[str, Any]) -> JWTAuthenticator:
    return JWTAuthenticator(
        issuer=ISSUER, audience=AUDIENCE, jwks={"keys": [rsa_jwk]}, algorithms=("RS256", "ES256")
    )


def good_token(rsa_key: rsa.RSAPrivateKey, **overrides: Any) -> str:
    return jwt.encode(claims(**overrides), rsa_key, algorithm="RS256", headers={"kid": "k1"})


async def refused(auth: Any, headers: Any, match: str | None = None) -> Unauthorized:
    with pytest.raises(Unauthorized, match=match) as excinfo:
        await auth.authenticate(headers)
    status, body, _ = to_http(excinfo.value)
    assert status == 401 and body["error"]["type"] == "authentication_error"
    return excinfo.value


async def test_the_honest_token_passes(auth: JWTAuthenticator, rsa_key: Any) -> None:
    principal = await auth.authenticate({"authorization": f"Bearer {good_token(rsa_key)}"})
    assert principal.subject == "mallory"


# ----------------------------------------------------------------------------- token attacks


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"authorization": ""},
        {"authorization": "Bearer"},
        {"authorization": "Bearer "},
        {"authorization": "Basic bWFsbG9yeTpwdw=="},
        {"authorization": "Token abc.def.ghi"},
        {"x-api-key": ""},
    ],
)
async def test_missing_or_non_bearer_credentials(
    auth: JWTAuthenticator, headers: dict[str, str]
) -> None:
    await refused(auth, headers)


@pytest.mark.parametrize(
    "token",
    [
        "abc",
        "a.b",
        "a.b.c.d",
        "....",
        "not base64!.x.y",
        b64url(b"[1,2]") + "." + b64url(b"{}") + ".sig",  # header not an object
        b64url(b'{"alg":"RS256"') + "." + b64url(b"{}") + ".sig",  # truncated JSON
        b64url(b'{"alg":"RS256","kid":"k1"}') + "." + b64url(b"not json") + ".sig",
    ],
)
async def test_malformed_tokens(auth: JWTAuthenticator, token: str) -> None:
    await refused(auth, {"authorization": f"Bearer {token}"})


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"exp": int(time.time()) - 3600}, "expired"),
        ({"nbf": int(time.time()) + 3600}, "not yet valid"),
        ({"aud": "another-service"}, "audience"),
        ({"aud": None}, "'aud'"),
        ({"iss": "https://evil.test"}, "issuer"),
        ({"iss": "https://idp.test/"}, "issuer"),  # near-miss issuers are different issuers
        ({"exp": "tomorrow"}, "invalid token"),
    ],
)
async def test_claims_attacks(
    auth: JWTAuthenticator, rsa_key: Any, overrides: dict[str, Any], match: str
) -> None:
    await refused(auth, {"authorization": f"Bearer {good_token(rsa_key, **overrides)}"}, match)


async def test_a_tampered_payload_fails_the_signature(auth: JWTAuthenticator, rsa_key: Any) -> None:
    header, _, signature = good_token(rsa_key).split(".")
    elevated = b64url(json.dumps(claims(roles=["admin"])).encode())
    await refused(auth, {"authorization": f"Bearer {header}.{elevated}.{signature}"}, "signature")


async def test_a_token_re_signed_with_the_attackers_key_fails(auth: JWTAuthenticator) -> None:
    attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode(claims(roles=["admin"]), attacker, algorithm="RS256", headers={"kid": "k1"})
    await refused(auth, {"authorization": f"Bearer {token}"}, "signature")


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE", ""])
async def test_alg_none_is_refused(auth: JWTAuthenticator, alg: str) -> None:
    token = forge({"alg": alg, "kid": "k1", "typ": "JWT"}, claims(roles=["admin"]))
    await refused(auth, {"authorization": f"Bearer {token}"}, "algorithm not accepted")
    await refused(auth, {"authorization": f"Bearer {token[:-1]}x"})


@pytest.mark.parametrize("key_form", ["pem", "der", "jwk-json", "n-modulus"])
async def test_algorithm_confusion_hs256_keyed_with_the_public_key(
    auth: JWTAuthenticator, rsa_key: Any, rsa_jwk: dict[str, Any], key_form: str
) -> None:
    public = rsa_key.public_key()
    secret = {
        "pem": public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        "der": public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        "jwk-json": json.dumps(rsa_jwk).encode(),
        "n-modulus": rsa_jwk["n"].encode(),
    }[key_form]
    for alg, digest in (("HS256", hashlib.sha256), ("HS512", hashlib.sha512)):
        token = forge(
            {"alg": alg, "kid": "k1"},
            claims(roles=["admin"]),
            lambda m, d=digest: hmac.new(secret, m, d).digest(),
        )
        await refused(auth, {"authorization": f"Bearer {token}"}, "algorithm not accepted")


async def test_an_embedded_key_or_key_url_is_never_used(
    auth: JWTAuthenticator, jwks_server: Any
) -> None:
    attacker = ec.generate_private_key(ec.SECP256R1())
    jwks_server.state.document = {"keys": [public_jwk(attacker.public_key(), kid="evil")]}
    headers = {
        "kid": "k1",
        "jwk": public_jwk(attacker.public_key(), kid="evil"),
        "jku": jwks_server.jwks_url,
        "x5u": jwks_server.url + "/cert.pem",
    }
    token = jwt.encode(claims(roles=["admin"]), attacker, algorithm="ES256", headers=headers)
    await refused(auth, {"authorization": f"Bearer {token}"})
    evil_kid = jwt.encode(claims(), attacker, algorithm="ES256", headers={**headers, "kid": "evil"})
    await refused(auth, {"authorization": f"Bearer {evil_kid}"}, "unknown signing key")
    assert jwks_server.state.hits == 0  # the attacker's URLs were never fetched


@pytest.mark.parametrize(
    "kid", ["../../../../etc/passwd", "k1' OR '1'='1", "k1\x00", "", "x" * 5000]
)
async def test_kid_injection(auth: JWTAuthenticator, rsa_key: Any, kid: str) -> None:
    token = jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": kid})
    await refused(auth, {"authorization": f"Bearer {token}"})


@pytest.mark.parametrize("crit", [["exp"], ["urn:example:must-understand"]])
async def test_crit_headers_are_refused(
    auth: JWTAuthenticator, rsa_key: Any, crit: list[str]
) -> None:
    headers = {"kid": "k1", "crit": crit, "urn:example:must-understand": True}
    token = jwt.encode(claims(), rsa_key, algorithm="RS256", headers=headers)
    await refused(auth, {"authorization": f"Bearer {token}"}, r"critical|malformed")


async def test_a_kid_that_is_not_a_string(auth: JWTAuthenticator) -> None:
    token = forge({"alg": "RS256", "kid": 7}, claims(), lambda m: b"x")
    await refused(auth, {"authorization": f"Bearer {token}"}, "malformed")


# ----------------------------------------------------------------------------- header injection


@pytest.mark.parametrize(
    "value",
    [
        "Bearer abc\r\nX-Admin: true",
        "Bearer abc\nX-Admin: true",
        "Bearer abc\x00def",
        "Bearer abc\tdef",
        "Bearer abc def",
        "Bearer  abc",
        "Bearer abc, Bearer def",  # two folded headers
        "Bearer abc,def",
        "Bearer \u00e4bc",
        "Bearer " + "a" * MAX_CREDENTIAL_HEADER_BYTES,
    ],
)
def test_header_injection_and_oversized_values(value: str) -> None:
    with pytest.raises(Unauthorized):
        bearer_credential({"Authorization": value})


def test_duplicate_authorization_headers_in_every_shape() -> None:
    with pytest.raises(Unauthorized, match="duplicate"):
        bearer_credential({"Authorization": "Bearer a", "authorization": "Bearer b"})
    with pytest.raises(Unauthorized, match="duplicate"):
        bearer_credential(
            httpx.Headers([("authorization", "Bearer a"), ("authorization", "Bearer b")])
        )
    with pytest.raises(Unauthorized, match="not both"):
        bearer_credential({"authorization": "Bearer a", "x-api-key": "gf-b"})
    with pytest.raises(Unauthorized, match="duplicate"):
        bearer_credential({"x-api-key": "a", "X-Api-Key": "b"})
    with pytest.raises(Unauthorized, match="malformed"):
        bearer_credential({"x-api-key": "gf-a b"})


# ----------------------------------------------------------------------------- over HTTP


@pytest.fixture
async def api_keys(tmp_path: Path, hash_secret: SecretStr) -> AsyncIterator[APIKeyManager]:
    store = SQLiteAPIKeyStore(str(tmp_path / "keys.db"))
    yield APIKeyManager(store, secret=hash_secret)
    await store.close()


@pytest.fixture
def protected_app(api_keys: APIKeyManager, auth: JWTAuthenticator) -> Starlette:
    """A tiny service guarded like the gateway guards its routes."""
    authenticator = CompositeAuthenticator([APIKeyAuthenticator(api_keys), auth])

    async def whoami(request: Request) -> JSONResponse:
        try:
            principal = await authenticator.authenticate(request.headers)
        except GFError as exc:
            status, body, headers = to_http(exc)
            return JSONResponse(body, status_code=status, headers=headers)
        return JSONResponse({"subject": principal.subject, "method": principal.auth_method})

    return Starlette(routes=[Route("/whoami", whoami)])


async def call(app: Starlette, headers: list[tuple[str, str]]) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app.test") as http:
        return await http.get("/whoami", headers=headers)


async def test_over_http_duplicate_headers_are_refused_and_good_ones_pass(
    protected_app: Starlette,
    api_keys: APIKeyManager,
    rsa_key: Any,
    remember_secret: Callable[..., None],
) -> None:
    issued = await api_keys.create("k", subject="svc")
    remember_secret(issued.key)
    token = good_token(rsa_key)
    ok_key = await call(protected_app, [("authorization", f"Bearer {issued.key}")])
    ok_jwt = await call(protected_app, [("authorization", f"Bearer {token}")])
    assert ok_key.json() == {"subject": "svc", "method": "api_key"}
    assert ok_jwt.json() == {"subject": "mallory", "method": "jwt"}
    twice = await call(
        protected_app,
        [("authorization", f"Bearer {issued.key}"), ("authorization", f"Bearer {token}")],
    )
    assert twice.status_code == 401 and twice.json()["error"]["code"] == "duplicate_credentials"
    unknown_shape = await call(protected_app, [("authorization", "Bearer opaque-token-xyz")])
    assert unknown_shape.status_code == 401
    huge = await call(protected_app, [("authorization", "Bearer " + "a" * 10_000)])
    assert huge.status_code == 401


async def test_api_keys_are_dead_after_revocation_and_after_rotation_grace(
    api_keys: APIKeyManager, protected_app: Starlette, remember_secret: Callable[..., None]
) -> None:
    issued = await api_keys.create("k", subject="svc")
    rotated_from = await api_keys.create("r", subject="svc")
    remember_secret(issued.key, rotated_from.key)
    await api_keys.revoke(issued.key_id)
    again = await call(protected_app, [("x-api-key", issued.key)])
    assert again.status_code == 401 and again.json()["error"]["code"] == "api_key_revoked"
    replacement = await api_keys.rotate(rotated_from.key_id, grace_s=0)
    remember_secret(replacement.key)
    stale = await call(protected_app, [("x-api-key", rotated_from.key)])
    assert stale.status_code == 401 and stale.json()["error"]["code"] == "api_key_expired"
    assert (await call(protected_app, [("x-api-key", replacement.key)])).status_code == 200
    # a revoked key cannot be resurrected by rotating it
    with pytest.raises(GFError):
        await api_keys.rotate(issued.key_id)


# ----------------------------------------------------------------------------- escalation


@pytest.fixture
def policy() -> PolicyAuthorizer:
    return PolicyAuthorizer(policy_file=str(EXAMPLE_POLICY))


def test_privilege_escalation_through_role_edits_is_refused(policy: PolicyAuthorizer) -> None:
    admin_tool = RoleAdministrator(policy)
    viewer = Principal(subject="vic", user_id="vic", roles=frozenset({"viewer"}))
    lead = Principal(subject="lena", user_id="lena", roles=frozenset({"team-lead"}))
    before = policy.policy
    attempts: list[Callable[[], None]] = [
        lambda: admin_tool.assign(viewer, "user", "vic", "admin"),  # self-promotion
        lambda: admin_tool.assign(viewer, "user", "vic", "viewer"),  # no assign right at all
        lambda: admin_tool.assign(lead, "user", "lena", "admin"),  # beyond what leads may hand out
        lambda: admin_tool.assign(lead, "user", "lena", "editor"),
        lambda: admin_tool.assign(lead, "org", "acme", "admin"),
        lambda: admin_tool.unassign(lead, "user", "alice", "admin"),  # demoting the admin
        lambda: admin_tool.set_inherits(lead, "team-lead", ["admin"]),  # grow one's own role
        lambda: admin_tool.set_inherits(lead, "viewer", ["admin"]),
        lambda: admin_tool.put_rule(
            lead, {"id": "mine", "roles": ["team-lead"], "actions": ["*"], "resources": ["*"]}
        ),
        lambda: admin_tool.remove_rule(lead, "restricted-data-stays-in-the-eu"),
    ]
    for attempt in attempts:
        with pytest.raises(Forbidden):
            attempt()
    assert policy.policy == before  # nothing changed
    assert policy.effective_roles(lead) == {"team-lead", "invoker", "viewer"}


def test_an_actor_with_the_assign_right_still_cannot_grant_roles_it_lacks() -> None:
    policy = PolicyAuthorizer(
        {
            "rules": [
                {
                    "id": "helpdesk-assigns-anything",
                    "roles": ["helpdesk"],
                    "actions": ["assign"],
                    "resources": ["role"],
                },
                {
                    "id": "admins-everything",
                    "roles": ["admin"],
                    "actions": ["*"],
                    "resources": ["*"],
                },
            ]
        }
    )
    helpdesk = Principal(subject="hd", roles=frozenset({"helpdesk"}))
    with pytest.raises(Forbidden) as excinfo:
        RoleAdministrator(policy).assign(helpdesk, "user", "hd", "admin")
    assert excinfo.value.code == "privilege_escalation"
    RoleAdministrator(policy).assign(helpdesk, "user", "someone", "helpdesk")  # what it holds: fine


# ----------------------------------------------------------------------------- the RBAC matrix

ROLES = ["viewer", "invoker", "editor", "team-lead", "admin", "auditor", None]
REQUESTS = {
    "read-model": ("read", "model:m"),
    "invoke-model": ("invoke", "model:m"),
    "query-kb": ("query", "kb:k"),
    "update-kb": ("update", "kb:k"),
    "update-others-prompt": ("update", "prompt:p"),
    "publish-prompt": ("publish", "prompt:p"),
    "invoke-tool": ("invoke", "tool:web_search"),
    "read-audit": ("read", "admin:audit"),
    "update-policy": ("update", "admin:policy"),
    "assign-invoker": ("assign", "role:invoker"),
    "assign-admin": ("assign", "role:admin"),
    "delete-model": ("delete", "model:m"),
}
INVOKER = {
    "read-model": "read-catalogue",
    "invoke-model": "invoke-models-within-clearance",
    "query-kb": "query-kbs-within-clearance",
    "invoke-tool": "invoke-tools",
}
EDITOR = INVOKER | {
    "update-kb": "edit-content",
    "update-others-prompt": "edit-content",
    "publish-prompt": "edit-content",
}
# role -> request -> the rule that allows it; anything absent is denied by default-deny
EXPECTED: dict[str | None, dict[str, str]] = {
    "viewer": {"read-model": "read-catalogue"},
    "invoker": INVOKER,
    "editor": EDITOR,
    "team-lead": INVOKER | {"assign-invoker": "team-leads-hand-out-basic-roles"},
    "admin": EDITOR
    | {
        "read-audit": "admins-do-everything",
        "update-policy": "admins-do-everything",
        "assign-invoker": "team-leads-hand-out-basic-roles",
        "assign-admin": "admins-do-everything",
        "delete-model": "admins-do-everything",
    },
    "auditor": {"read-audit": "auditors-read-the-audit-trail"},
    None: {},
}
CONTEXT = {
    "classification": "internal",
    "region": "eu-west-1",
    "owner": "someone-else",
    "now": datetime(2025, 3, 3, 12, 0, tzinfo=UTC),
}


@pytest.fixture(scope="module")
def matrix_policy() -> PolicyAuthorizer:
    """Read-only in these tests, so one compiled copy serves the whole matrix."""
    return PolicyAuthorizer(policy_file=str(EXAMPLE_POLICY))


@pytest.mark.parametrize("request_name", sorted(REQUESTS))
@pytest.mark.parametrize("role", ROLES, ids=[str(r) for r in ROLES])
async def test_rbac_matrix(
    matrix_policy: PolicyAuthorizer, role: str | None, request_name: str
) -> None:
    principal = Principal(
        subject="tester",
        user_id="tester",
        roles=frozenset({role}) if role else frozenset(),
        attributes={"clearance": "confidential"},
    )
    action, resource = REQUESTS[request_name]
    decision = await matrix_policy.authorize(principal, action, resource, CONTEXT)
    expected_rule = EXPECTED[role].get(request_name)
    assert decision.allowed is (expected_rule is not None)
    assert decision.rule == (expected_rule or "default-deny")


@pytest.mark.parametrize("role", ROLES[:-1])
async def test_restricted_data_outside_the_eu_is_denied_to_every_role(
    matrix_policy: PolicyAuthorizer, role: str
) -> None:
    principal = Principal(
        subject="t", roles=frozenset({role}), attributes={"clearance": "restricted"}
    )
    context = CONTEXT | {"classification": "restricted", "region": "us-east-1"}
    for action, resource in REQUESTS.values():
        decision = await matrix_policy.authorize(principal, action, resource, context)
        if resource.split(":")[0] in ("model", "kb", "prompt"):
            assert decision == decision.__class__(
                False, "restricted-data-stays-in-the-eu", decision.reason
            )
