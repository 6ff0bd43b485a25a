"""The AWS KMS master-key provider, against a real KMS-compatible HTTP server (moto's).

The server is ``python -m moto.server`` in its own process, with request authentication on
(``INITIAL_NO_AUTH_ACTION_COUNT``): after the three IAM calls that create our user, its access
key and its ``kms:*`` policy, every request must carry a valid SigV4 signature, which moto checks
with botocore's own signer. So these tests prove the signing, the wire format, envelope
encryption through ``GenerateDataKey``, and master-key rotation from one KMS key to another.
"""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genai_factory.security.encryption import DecryptionError
from genai_factory.security.kms import AWSKMSMasterKeys
from genai_factory.security.secret_store import EncryptedSecretStore
from genai_factory.shared.errors import (
    ConfigError,
    Forbidden,
    ServiceUnavailable,
    ValidationError,
)
from genai_factory.shared.factory import build_component, dump_component
from genai_factory.shared.sigv4 import sign_v4

pytest.importorskip("moto", reason="moto[server] (a local KMS) is not installed")
pytest.importorskip("flask", reason="moto's server needs flask")

REGION = "us-east-1"


@dataclass(frozen=True)
class KMSServer:
    url: str
    access_key_id: str
    secret_access_key: str


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _iam(url: str, **form: str) -> str:
    """An IAM query call, during the server's unauthenticated start-up allowance."""
    scope = f"AKIDSETUP/20260101/{REGION}/iam/aws4_request"
    reply = httpx.post(
        url,
        data={**form, "Version": "2010-05-08"},
        headers={"authorization": f"AWS4-HMAC-SHA256 Credential={scope}, Signature=x"},
        timeout=30,
    )
    assert reply.status_code == 200, reply.text
    return reply.text


@pytest.fixture(scope="module")
def kms_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KMSServer]:
    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    env = os.environ | {"INITIAL_NO_AUTH_ACTION_COUNT": "3"}  # then every call must be signed
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                pytest.fail(f"moto's server exited:\n{log.read_text()[-3000:]}")
            try:
                httpx.get(f"{url}moto-api/", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    pytest.fail(f"moto's server did not start:\n{log.read_text()[-3000:]}")
                time.sleep(0.2)
        _iam(url, Action="CreateUser", UserName="gf-kms")
        created = _iam(url, Action="CreateAccessKey", UserName="gf-kms")
        policy = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*"}],
        }
        _iam(
            url,
            Action="PutUserPolicy",
            UserName="gf-kms",
            PolicyName="kms",
            PolicyDocument=json.dumps(policy),
        )
        key_id = re.search(r"<AccessKeyId>(.+?)</AccessKeyId>", created)
        secret = re.search(r"<SecretAccessKey>(.+?)</SecretAccessKey>", created)
        assert key_id and secret, created
        yield KMSServer(url, key_id.group(1), secret.group(1))
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture
def kms(
    kms_server: KMSServer, monkeypatch: pytest.MonkeyPatch, remember_secret: Callable[..., None]
) -> KMSServer:
    """The server, with its credentials in the standard AWS variables (and never in a log)."""
    remember_secret(kms_server.secret_access_key)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", kms_server.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", kms_server.secret_access_key)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    return kms_server


def provider(server: KMSServer, key_id: str = "placeholder", **kw: Any) -> AWSKMSMasterKeys:
    return AWSKMSMasterKeys(key_id, region=REGION, endpoint_url=server.url, **kw)


async def new_key(server: KMSServer) -> str:
    admin = provider(server)
    try:
        answer = await admin.call("CreateKey", {"Description": "gf test master key"})
    finally:
        await admin.aclose()
    return str(answer["KeyMetadata"]["KeyId"])


# ----------------------------------------------------------------------------- envelope encryption


def entries_of(path: str | Path) -> dict[str, Any]:
    return dict(json.loads(Path(path).read_text())["secrets"])


async def test_envelope_encryption_through_kms(kms: KMSServer, tmp_path: Path) -> None:
    key_id = await new_key(kms)
    master = provider(kms, key_id)
    path = tmp_path / "secrets.json"
    store = EncryptedSecretStore(str(path), master=master)
    await store.set("openai-api-key", "sk-kms-protected-value")
    await store.set("db/password", "correct horse battery staple")
    assert (await store.get("openai-api-key")).get_secret_value() == "sk-kms-protected-value"
    assert (await store.get("db/password")).get_secret_value() == "correct horse battery staple"

    text = path.read_text()
    assert "sk-kms-protected-value" not in text and "battery" not in text
    entries = json.loads(text)["secrets"]
    assert {e["master_key_id"] for e in entries.values()} == {key_id}
    # each secret has its own data key, wrapped by KMS (two different blobs)
    assert entries["openai-api-key"]["wrapped_key"] != entries["db/password"]["wrapped_key"]

    # a second process with the same config reads them back through KMS
    other = EncryptedSecretStore(str(path), master=provider(kms, key_id))
    assert (await other.get("db/password")).get_secret_value() == "correct horse battery staple"
    await master.aclose()
    await other.master.aclose()  # type: ignore[attr-defined]


async def test_wrapped_keys_are_bound_to_their_key_and_context(kms: KMSServer) -> None:
    key_a, key_b = await new_key(kms), await new_key(kms)
    master = provider(kms, key_a)
    data_key, kid, wrapped = await master.generate_data_key(b"gf-secret:a")
    assert kid == key_a and len(data_key) == 32 and data_key not in wrapped
    assert await master.unwrap(key_a, wrapped, b"gf-secret:a") == data_key
    kid, wrapped_again = await master.wrap(data_key, b"gf-secret:a")
    assert kid == key_a and await master.unwrap(key_a, wrapped_again, b"gf-secret:a") == data_key

    with pytest.raises(DecryptionError):  # moved to another secret: the context differs
        await master.unwrap(key_a, wrapped, b"gf-secret:b")
    with pytest.raises(DecryptionError):  # tampered (the last byte: the blob's auth tag)
        await master.unwrap(key_a, wrapped[:-1] + bytes([wrapped[-1] ^ 1]), b"gf-secret:a")
    # claimed to be under another key: KMS refuses (AWS: IncorrectKeyException, a
    # DecryptionError; moto answers AccessDeniedException, a Forbidden)
    with pytest.raises((DecryptionError, Forbidden)):
        await master.unwrap(key_b, wrapped, b"gf-secret:a")
    await master.aclose()


async def test_rotating_to_a_new_kms_key_rewraps_every_secret(
    kms: KMSServer, tmp_path: Path
) -> None:
    old_key, new_key_id = await new_key(kms), await new_key(kms)
    path = str(tmp_path / "secrets.json")
    old = EncryptedSecretStore(path, master=provider(kms, old_key))
    values = {f"svc/{i}": f"value-{i}-{'x' * i}" for i in range(5)}
    for name, value in values.items():
        await old.set(name, value)
    before = entries_of(path)

    master = provider(kms, new_key_id)
    rotated = EncryptedSecretStore(path, master=master)
    # readable before the rotation (old blobs decrypt with the old key, still enabled)
    assert (await rotated.get("svc/3")).get_secret_value() == values["svc/3"]
    assert await rotated.rotate_master_key() == len(values)
    assert await rotated.rotate_master_key() == 0  # idempotent
    after = entries_of(path)
    assert {e["master_key_id"] for e in after.values()} == {new_key_id}
    for name in values:  # only the wrapping changed, not the secrets' own ciphertexts
        assert after[name]["ciphertext"] == before[name]["ciphertext"]
        assert after[name]["wrapped_key"] != before[name]["wrapped_key"]

    # every data key is now wrapped by the new KMS key: KMS opens it under that key id only
    for name, value in values.items():
        assert (await rotated.get(name)).get_secret_value() == value
        wrapped = base64.b64decode(after[name]["wrapped_key"])
        with pytest.raises((DecryptionError, Forbidden)):  # AWS: IncorrectKey; moto: AccessDenied
            await master.unwrap(old_key, wrapped, f"gf-secret:{name}".encode())
    await master.aclose()
    await old.master.aclose()  # type: ignore[attr-defined]


# ----------------------------------------------------------------------------- signing and errors


async def test_the_server_rejects_a_wrong_signature(
    kms: KMSServer, monkeypatch: pytest.MonkeyPatch, remember_secret: Callable[..., None]
) -> None:
    key_id = await new_key(kms)  # signed correctly: accepted
    wrong = "x" * len(kms.secret_access_key)
    remember_secret(wrong)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", wrong)
    master = provider(kms, key_id)
    with pytest.raises(Forbidden) as caught:
        await master.wrap(b"k" * 32, b"aad")
    assert wrong not in str(caught.value) and kms.secret_access_key not in str(caught.value)
    await master.aclose()


async def test_kms_errors_are_typed(kms: KMSServer) -> None:
    master = provider(kms, "alias/does-not-exist")
    with pytest.raises((DecryptionError, ValidationError)):
        await master.wrap(b"k" * 32, b"aad")
    with pytest.raises(ValidationError):
        await master.call("Bad-Action", {})
    await master.aclose()
    down = AWSKMSMasterKeys(
        "k", region=REGION, endpoint_url=f"http://127.0.0.1:{_free_port()}/", timeout_s=2
    )
    with pytest.raises(ServiceUnavailable):
        await down.generate_data_key(b"aad")
    await down.aclose()


def test_config_is_checked_and_holds_no_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GF_TEST_AK", "AKIDEXAMPLE")
    monkeypatch.setenv("GF_TEST_SK", "very-secret-key-material")
    names = {"access_key_id_env": "GF_TEST_AK", "secret_access_key_env": "GF_TEST_SK"}
    master = AWSKMSMasterKeys("alias/x", region="eu-west-1", **names)
    assert master.endpoint_url == "https://kms.eu-west-1.amazonaws.com/"
    assert master.current_key_id == "alias/x"
    params = master.to_params()
    assert "very-secret-key-material" not in repr(params) + repr(master)
    assert AWSKMSMasterKeys(**params).to_params() == params
    for bad in (
        {"key_id": ""},
        {"region": "eu west"},
        {"endpoint_url": "ftp://kms"},
        {"timeout_s": 0},
        {"secret_access_key_env": "GF_TEST_UNSET"},
    ):
        with pytest.raises(ConfigError):
            AWSKMSMasterKeys(**{"key_id": "k", **names, **bad})  # type: ignore[arg-type]


def test_a_kms_backed_store_builds_from_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's config: the store and its KMS master key, and a dump without credentials."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-that-must-not-be-dumped")
    spec = {
        "type": "genai_factory.security.secret_store:EncryptedSecretStore",
        "params": {
            "path": "secrets.json",
            "master": {
                "type": "genai_factory.security.kms:AWSKMSMasterKeys",
                "params": {"key_id": "alias/gf-secrets", "region": "eu-west-1"},
            },
        },
    }
    store = build_component(spec)
    assert isinstance(store, EncryptedSecretStore)
    assert isinstance(store.master, AWSKMSMasterKeys)
    assert store.master.current_key_id == "alias/gf-secrets"
    dumped = dump_component(store.master)
    assert "secret-that-must-not-be-dumped" not in repr(dumped)
    assert dump_component(build_component(dumped)) == dumped


def test_sigv4_matches_the_documented_example() -> None:
    """AWS's SigV4 documentation example (IAM ListUsers, GET with a query string)."""
    headers = sign_v4(
        sign_payload_hash=True,
        method="GET",
        url="https://iam.amazonaws.com/?Action=ListUsers&Version=2010-05-08",
        headers={"content-type": "application/x-www-form-urlencoded; charset=utf-8"},
        body=b"",
        region="us-east-1",
        service="iam",
        access_key_id="AKIDEXAMPLE",
        secret_access_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        now=datetime(2015, 8, 30, 12, 36, tzinfo=UTC),
    )
    assert headers["x-amz-date"] == "20150830T123600Z"
    assert headers["host"] == "iam.amazonaws.com"
    # the documented example signs content-type, host and x-amz-date; we add the payload hash
    assert (
        "SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date"
        in (headers["authorization"])
    )


_header_value = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=30
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.binary(max_size=200),
    path=st.lists(st.from_regex(r"[A-Za-z0-9_.~-]{1,8}", fullmatch=True), max_size=3),
    extra=st.dictionaries(st.from_regex(r"x-gf-[a-z]{1,6}", fullmatch=True), _header_value),
    port=st.one_of(st.none(), st.integers(1, 65535)),
    secret=st.text(min_size=1, max_size=40),
    token=st.one_of(st.none(), st.text(alphabet="abcdefXYZ0123456789/+=", min_size=1)),
)
def test_sigv4_signature_equals_botocores(
    body: bytes,
    path: list[str],
    extra: dict[str, str],
    port: int | None,
    secret: str,
    token: str | None,
) -> None:
    """The same request signed here and by botocore (what AWS's SDKs and moto use) agrees."""
    botocore_auth = pytest.importorskip("botocore.auth")
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    netloc = "kms.example.test" + (f":{port}" if port else "")
    url = f"https://{netloc}/{'/'.join(path)}"
    headers = {"content-type": "application/x-amz-json-1.1", **extra}
    ours = sign_v4(
        sign_payload_hash=True,
        method="POST",
        url=url,
        headers=headers,
        body=body,
        region="eu-central-1",
        service="kms",
        access_key_id="AKIDEXAMPLE",
        secret_access_key=secret,
        session_token=token,
        now=datetime(2026, 11, 21, 12, 0, 1, tzinfo=UTC),
    )
    signer = botocore_auth.SigV4Auth(
        Credentials("AKIDEXAMPLE", secret, token), "kms", "eu-central-1"
    )
    request = AWSRequest(
        method="POST",
        url=url,
        data=body,
        headers={k: v for k, v in ours.items() if k != "authorization"},
    )
    request.context["timestamp"] = ours["x-amz-date"]
    canonical = signer.canonical_request(request)
    expected = signer.signature(signer.string_to_sign(request, canonical), request)
    assert ours["authorization"].endswith(f"Signature={expected}")
