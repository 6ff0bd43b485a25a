"""OAuth2 client credentials: the token endpoint, its errors, and tokens the JWT verifier accepts."""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pydantic import SecretStr
from starlette.applications import Starlette

from genai_factory.security.apikeys import hash_api_key
from genai_factory.security.jwt_auth import JWTAuthenticator
from genai_factory.security.oauth import ServiceAccountRegistry, TokenSigner, create_token_app
from genai_factory.shared.errors import ConfigError, Conflict, Unauthorized
from genai_factory.shared.factory import dump_component

ISSUER = "https://auth.genai-factory.test"
AUDIENCE = "genai-factory"


def pem(key: Any) -> SecretStr:
    return SecretStr(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
    )


@pytest.fixture
def signer(ec_key: ec.EllipticCurvePrivateKey, remember_secret: Callable[..., None]) -> TokenSigner:
    private = pem(ec_key)
    remember_secret(private)
    return TokenSigner(
        issuer=ISSUER, audience=AUDIENCE, kid="sig-1", private_key_pem=private, ttl_s=600
    )


@pytest.fixture
def accounts(hash_secret: SecretStr) -> ServiceAccountRegistry:
    return ServiceAccountRegistry(secret=hash_secret)


@pytest.fixture
def batch_secret(accounts: ServiceAccountRegistry, remember_secret: Callable[..., None]) -> str:
    secret = accounts.register(
        "batch-job",
        roles=["invoker"],
        scopes=["model:invoke", "prompt:read"],
        org_id="acme",
        team_id="ml",
    )
    remember_secret(secret)
    return secret


@pytest.fixture
async def client(
    signer: TokenSigner, accounts: ServiceAccountRegistry
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_token_app(signer, accounts)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://token.test") as http:
        yield http


def verifier(signer: TokenSigner) -> JWTAuthenticator:
    return JWTAuthenticator(
        issuer=ISSUER, audience=AUDIENCE, jwks=signer.jwks(), algorithms=("ES256",)
    )


async def test_client_secret_post_gets_a_token_the_verifier_accepts(
    client: httpx.AsyncClient,
    signer: TokenSigner,
    batch_secret: str,
    remember_secret: Callable[..., None],
) -> None:
    response = await client.post(
        "/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": "batch-job",
            "client_secret": batch_secret,
        },
    )
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    remember_secret(body["access_token"])
    assert body["token_type"] == "Bearer" and body["expires_in"] == 600
    assert body["scope"] == "model:invoke prompt:read"
    principal = await verifier(signer).authenticate(
        {"authorization": f"Bearer {body['access_token']}"}
    )
    assert principal.subject == "batch-job" and principal.auth_method == "oauth2"
    assert principal.roles == {"invoker"} and principal.scopes == {"model:invoke", "prompt:read"}
    assert (principal.org_id, principal.team_id) == ("acme", "ml")


async def test_basic_authentication_and_a_narrower_scope(
    client: httpx.AsyncClient,
    signer: TokenSigner,
    batch_secret: str,
    remember_secret: Callable[..., None],
) -> None:
    response = await client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "scope": "model:invoke"},
        auth=("batch-job", batch_secret),
    )
    assert response.status_code == 200, response.text
    remember_secret(response.json()["access_token"])
    principal = await verifier(signer).authenticate(
        {"authorization": f"Bearer {response.json()['access_token']}"}
    )
    assert principal.scopes == {"model:invoke"}


def _error(response: httpx.Response) -> dict[str, Any]:
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}  # OpenAI-shaped
    return error  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("data", "auth", "status", "code"),
    [
        (
            {
                "grant_type": "client_credentials",
                "client_id": "batch-job",
                "client_secret": "wrong",
            },
            None,
            401,
            "invalid_client",
        ),
        (
            {"grant_type": "client_credentials", "client_id": "nobody", "client_secret": "x"},
            None,
            401,
            "invalid_client",
        ),
        ({"grant_type": "client_credentials"}, None, 401, "invalid_client"),
        ({"grant_type": "client_credentials"}, ("batch-job", "wrong"), 401, "invalid_client"),
        (
            {"grant_type": "password", "client_id": "batch-job", "client_secret": "x"},
            None,
            400,
            "unsupported_grant_type",
        ),
        ({"client_id": "batch-job"}, None, 400, "unsupported_grant_type"),
        ({"grant_type": "client_credentials", "scope": "admin:*"}, "good", 400, "invalid_scope"),
        (
            {"grant_type": "client_credentials", "client_id": "batch-job"},
            "good",
            400,
            "invalid_request",
        ),
    ],
)
async def test_token_request_errors(
    client: httpx.AsyncClient,
    batch_secret: str,
    data: dict[str, str],
    auth: Any,
    status: int,
    code: str,
) -> None:
    if auth == "good":
        auth = ("batch-job", batch_secret)
    response = await client.post("/oauth/token", data=data, auth=auth)
    assert response.status_code == status, response.text
    assert _error(response)["code"] == code
    assert response.headers["cache-control"] == "no-store"
    if status == 401 and auth is not None:
        assert response.headers["www-authenticate"].startswith("Basic")


@pytest.mark.parametrize(
    ("content", "headers", "status"),
    [
        (b'{"grant_type": "client_credentials"}', {"content-type": "application/json"}, 400),
        (b"grant_type=client_credentials&grant_type=password", None, 400),
        (b"grant_type=client_credentials&&&", None, 400),
        (b"a=" + b"x" * 5000, None, 413),
        (b"grant_type=\xff", None, 400),
    ],
)
async def test_malformed_bodies_are_client_errors(
    client: httpx.AsyncClient, content: bytes, headers: dict[str, str] | None, status: int
) -> None:
    response = await client.post(
        "/oauth/token",
        content=content,
        headers=headers or {"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == status, response.text
    _error(response)


async def test_malformed_basic_credentials_are_client_errors(client: httpx.AsyncClient) -> None:
    for value in ("Basic !!!", "Basic " + base64.b64encode(b"no-colon").decode(), "Digest x"):
        response = await client.post(
            "/oauth/token",
            data={"grant_type": "client_credentials"},
            headers={"authorization": value},
        )
        assert response.status_code == 400 and _error(response)["code"] == "invalid_request"


async def test_other_routes_and_methods_answer_json(client: httpx.AsyncClient) -> None:
    assert (await client.get("/oauth/token")).status_code == 405
    assert _error(await client.get("/nope"))["type"] == "invalid_request_error"
    jwks = (await client.get("/.well-known/jwks.json")).json()
    assert jwks["keys"][0]["kid"] == "sig-1" and "d" not in jwks["keys"][0]


class UvicornThread:
    """A real uvicorn server on 127.0.0.1 and a free port, in a background thread."""

    def __init__(self, app: Starlette) -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def token_service(signer: TokenSigner, accounts: ServiceAccountRegistry) -> Iterator[str]:
    with UvicornThread(create_token_app(signer, accounts)) as url:
        yield url


async def test_end_to_end_over_real_http(
    token_service: str, batch_secret: str, remember_secret: Callable[..., None]
) -> None:
    """A service account gets a token over HTTP; the verifier fetches the JWKS over HTTP."""
    async with httpx.AsyncClient(base_url=token_service) as http:
        response = await http.post(
            "/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=("batch-job", batch_secret),
        )
    assert response.status_code == 200
    token = response.json()["access_token"]
    remember_secret(token)
    auth = JWTAuthenticator(
        issuer=ISSUER,
        audience=AUDIENCE,
        jwks_url=f"{token_service}/.well-known/jwks.json",
        algorithms=("ES256",),
    )
    principal = await auth.authenticate({"authorization": f"Bearer {token}"})
    await auth.aclose()
    assert principal.subject == "batch-job" and principal.roles == {"invoker"}


def test_signer_configuration_is_checked_without_echoing_keys(
    rsa_key: rsa.RSAPrivateKey,
    monkeypatch: pytest.MonkeyPatch,
    remember_secret: Callable[..., None],
) -> None:
    rsa_pem = pem(rsa_key)
    remember_secret(rsa_pem)
    common: dict[str, Any] = {"issuer": ISSUER, "audience": AUDIENCE, "kid": "k"}
    with pytest.raises(ConfigError, match="cannot sign ES256"):
        TokenSigner(**common, private_key_pem=rsa_pem)
    with pytest.raises(ConfigError, match="asymmetric"):
        TokenSigner(**common, algorithm="HS256", private_key_pem=rsa_pem)
    with pytest.raises(ConfigError, match="ttl_s"):
        TokenSigner(**common, algorithm="RS256", private_key_pem=rsa_pem, ttl_s=0)
    garbage = SecretStr(
        "-----BEGIN PRIVATE KEY-----\nnot-a-key-material-xyz\n-----END PRIVATE KEY-----"
    )
    with pytest.raises(ConfigError) as excinfo:
        TokenSigner(**common, private_key_pem=garbage)
    assert "not-a-key-material" not in str(excinfo.value)
    monkeypatch.delenv("GF_SECURITY_OAUTH_SIGNING_KEY", raising=False)
    with pytest.raises(ConfigError, match="GF_SECURITY_OAUTH_SIGNING_KEY"):
        TokenSigner(**common)
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - must be refused
    with pytest.raises(ConfigError, match="2048"):
        TokenSigner(**common, algorithm="RS256", private_key_pem=pem(small))
    monkeypatch.setenv("GF_SECURITY_OAUTH_SIGNING_KEY", rsa_pem.get_secret_value())
    from_env = TokenSigner(**common, algorithm="RS256", retired_jwks=[{"kty": "RSA", "kid": "old"}])
    dumped = dump_component(from_env)
    assert "PRIVATE" not in str(dumped) and dumped["params"]["private_key_env"]
    assert [k["kid"] for k in from_env.jwks()["keys"]] == ["k", "old"]


def test_signer_reads_a_key_file(tmp_path: Any, ec_key: Any) -> None:
    path = tmp_path / "signing.pem"
    path.write_text(pem(ec_key).get_secret_value())
    signer = TokenSigner(issuer=ISSUER, audience=AUDIENCE, kid="f", private_key_file=str(path))
    token, ttl = signer.sign("svc")
    assert ttl == 900
    claims = asyncio.run(verifier(signer).verify(token))
    assert claims["sub"] == "svc" and claims["iss"] == ISSUER
    assert signer.to_params()["private_key_file"] == str(path)


def test_registry_accounts_come_from_config_as_hashes(hash_secret: SecretStr) -> None:
    digest = hash_api_key("configured-secret-value", hash_secret.get_secret_value().encode())
    registry = ServiceAccountRegistry(
        [{"client_id": "svc", "secret_hash": digest, "roles": ["r"], "scopes": ["s"]}],
        secret=hash_secret,
    )
    assert registry.verify("svc", "configured-secret-value").roles == ("r",)
    with pytest.raises(Unauthorized):
        registry.verify("svc", "configured-secret-valuE")
    with pytest.raises(Unauthorized):
        registry.verify("svc", "caf\u00e9")
    with pytest.raises(Conflict):
        registry.register("svc")
    with pytest.raises(ConfigError):
        registry.register("a:b")
    params = registry.to_params()
    assert params["accounts"][0]["secret_hash"] == digest and "secret" not in params
