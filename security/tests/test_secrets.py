"""Secret providers: env, files, the envelope-encrypted store, a chain, and Vault KV v2."""

from __future__ import annotations

import json
import os
import secrets
import stat
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from genai_factory.security.encryption import DecryptionError, Keyring, new_key_entry
from genai_factory.security.secret_store import (
    ChainSecretProvider,
    EncryptedSecretStore,
    EnvSecretProvider,
    FileSecretProvider,
    LocalMasterKeys,
    MasterKeyProvider,
    SecretProvider,
    WritableSecretProvider,
    validate_secret_name,
)
from genai_factory.security.vault import VaultSecretProvider
from genai_factory.shared.errors import (
    ConfigError,
    GFError,
    NotFound,
    ServiceUnavailable,
    ValidationError,
)
from genai_factory.shared.factory import build_component, dump_component


def read_entries(path: str) -> dict[str, Any]:
    return json.loads(Path(path).read_text())["secrets"]  # type: ignore[no-any-return]


def secret_value() -> str:
    return "sv-" + secrets.token_urlsafe(24)


# ----------------------------------------------------------------------------- env and files


async def test_env_provider(
    monkeypatch: pytest.MonkeyPatch, remember_secret: Callable[..., None]
) -> None:
    value = secret_value()
    remember_secret(value)
    monkeypatch.setenv("GF_SECRET_DB_PASSWORD", value)
    provider = EnvSecretProvider()
    assert isinstance(provider, SecretProvider)
    got = await provider.get("db/password")
    assert got.get_secret_value() == value and value not in repr(got) and value not in str(got)
    with pytest.raises(NotFound, match="GF_SECRET_MISSING") as excinfo:
        await provider.get("missing")
    assert value not in str(excinfo.value)


async def test_file_provider_reads_mounted_secrets_and_stays_in_its_directory(
    tmp_path: Path, remember_secret: Callable[..., None]
) -> None:
    value = secret_value()
    remember_secret(value)
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "api-key").write_text(value + "\n")
    (tmp_path / "outside").write_text("not yours")
    (tmp_path / "secrets" / "big").write_bytes(b"x" * (64 * 1024 + 1))
    provider = FileSecretProvider(str(tmp_path / "secrets"))
    assert (await provider.get("api-key")).get_secret_value() == value
    for name in ("../outside", "/etc/passwd", "a//b", ".hidden", ""):
        with pytest.raises(ValidationError):
            await provider.get(name)
    with pytest.raises(NotFound):
        await provider.get("nope")
    with pytest.raises(ValidationError, match="larger"):
        await provider.get("big")


async def test_a_symlink_cannot_lead_out_of_the_secret_directory(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "outside").write_text("not yours")
    (tmp_path / "secrets" / "link").symlink_to(tmp_path / "outside")
    with pytest.raises(ValidationError):
        await FileSecretProvider(str(tmp_path / "secrets")).get("link")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_secret_names_never_escape(name: str) -> None:
    try:
        validate_secret_name(name)
    except ValidationError:
        return
    parts = name.split("/")
    assert all(part and part not in (".", "..") and not part.startswith(".") for part in parts)
    assert not name.startswith("/")


async def test_a_chain_asks_each_provider_in_turn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "only-in-file").write_text("from-file")
    monkeypatch.setenv("GF_SECRET_BOTH", "from-env")
    (tmp_path / "both").write_text("from-file")
    chain = ChainSecretProvider([EnvSecretProvider(), FileSecretProvider(str(tmp_path))])
    assert (await chain.get("both")).get_secret_value() == "from-env"
    assert (await chain.get("only-in-file")).get_secret_value() == "from-file"
    with pytest.raises(NotFound, match="any provider"):
        await chain.get("nowhere")


# ----------------------------------------------------------------------------- envelope store


@pytest.fixture
def master_entry(remember_secret: Callable[..., None]) -> str:
    entry = new_key_entry("m1")
    remember_secret(entry.split(":", 1)[1])
    return entry


@pytest.fixture
def store(tmp_path: Path, master_entry: str) -> EncryptedSecretStore:
    master = LocalMasterKeys(keyring=Keyring.parse(master_entry))
    assert isinstance(master, MasterKeyProvider)
    return EncryptedSecretStore(str(tmp_path / "secrets.json"), master=master)


async def test_the_encrypted_store_round_trips_and_keeps_only_ciphertext(
    store: EncryptedSecretStore, tmp_path: Path, remember_secret: Callable[..., None]
) -> None:
    assert isinstance(store, WritableSecretProvider)
    value = secret_value()
    remember_secret(value)
    await store.set("openai/api-key", value)
    await store.set("other", "another-value")
    assert (await store.get("openai/api-key")).get_secret_value() == value
    raw = (tmp_path / "secrets.json").read_text()
    assert value not in raw and "another-value" not in raw
    assert stat.S_IMODE(os.stat(tmp_path / "secrets.json").st_mode) == 0o600
    entries = json.loads(raw)["secrets"]
    # every secret has its own data key
    assert entries["openai/api-key"]["wrapped_key"] != entries["other"]["wrapped_key"]
    assert await store.list() == ["openai/api-key", "other"]
    assert await store.delete("other") and not await store.delete("other")
    with pytest.raises(NotFound):
        await store.get("other")


async def test_a_ciphertext_moved_to_another_name_or_tampered_with_is_refused(
    store: EncryptedSecretStore, tmp_path: Path
) -> None:
    await store.set("a", "value-of-a")
    await store.set("b", "value-of-b")
    path = tmp_path / "secrets.json"
    data = json.loads(path.read_text())
    data["secrets"]["b"] = data["secrets"]["a"]  # swap a's envelope under b's name
    path.write_text(json.dumps(data))
    with pytest.raises(DecryptionError) as excinfo:
        await store.get("b")
    assert "value-of" not in str(excinfo.value)
    data["secrets"]["a"]["ciphertext"] = data["secrets"]["a"]["ciphertext"][:-4] + "AAAA"
    path.write_text(json.dumps(data))
    with pytest.raises(DecryptionError):
        await store.get("a")
    data["secrets"]["a"]["nonce"] = "!!"
    path.write_text(json.dumps(data))
    with pytest.raises(DecryptionError, match="malformed"):
        await store.get("a")


async def test_master_key_rotation_rewraps_data_keys_only(
    tmp_path: Path, master_entry: str, remember_secret: Callable[..., None]
) -> None:
    path = str(tmp_path / "secrets.json")
    old_store = EncryptedSecretStore(
        path, master=LocalMasterKeys(keyring=Keyring.parse(master_entry))
    )
    values = {f"s{i}": secret_value() for i in range(3)}
    remember_secret(*values.values())
    for name, value in values.items():
        await old_store.set(name, value)
    before = read_entries(path)
    new_entry = new_key_entry("m2")
    remember_secret(new_entry.split(":", 1)[1])
    rotated_master = LocalMasterKeys(keyring=Keyring.parse(f"{new_entry},{master_entry}"))
    store = EncryptedSecretStore(path, master=rotated_master)
    assert await store.rotate_master_key() == 3
    assert await store.rotate_master_key() == 0  # idempotent
    after = read_entries(path)
    for name in values:
        assert after[name]["master_key_id"] == "m2"
        assert after[name]["ciphertext"] == before[name]["ciphertext"]  # data untouched
        assert after[name]["wrapped_key"] != before[name]["wrapped_key"]
    # the old master key can now be retired
    only_new = EncryptedSecretStore(path, master=LocalMasterKeys(keyring=Keyring.parse(new_entry)))
    for name, value in values.items():
        assert (await only_new.get(name)).get_secret_value() == value
    with pytest.raises(DecryptionError, match="unknown encryption key id"):
        await old_store.get("s0")


async def test_master_keys_come_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, master_entry: str
) -> None:
    monkeypatch.delenv("GF_SECURITY_MASTER_KEYS", raising=False)
    with pytest.raises(ConfigError, match="GF_SECURITY_MASTER_KEYS"):
        LocalMasterKeys()
    monkeypatch.setenv("GF_SECURITY_MASTER_KEYS", master_entry)
    spec = {
        "type": "genai_factory.security.secret_store:EncryptedSecretStore",
        "params": {
            "path": str(tmp_path / "s.json"),
            "master": {"type": "genai_factory.security.secret_store:LocalMasterKeys", "params": {}},
        },
    }
    store = build_component(spec)
    await store.set("x", "y")
    assert (await store.get("x")).get_secret_value() == "y"
    assert master_entry.split(":", 1)[1] not in json.dumps(dump_component(store))


async def test_a_corrupt_store_file_is_a_config_error(
    store: EncryptedSecretStore, tmp_path: Path
) -> None:
    (tmp_path / "secrets.json").write_text("{not json")
    with pytest.raises(ConfigError, match="unreadable"):
        await store.get("x")
    (tmp_path / "secrets.json").write_text("[]")
    with pytest.raises(ConfigError, match="malformed"):
        await store.list()


async def test_oversized_values_are_refused(store: EncryptedSecretStore) -> None:
    with pytest.raises(ValidationError):
        await store.set("big", "x" * (64 * 1024 + 1))


async def test_unwrapping_with_a_mismatched_key_id_fails(master_entry: str) -> None:
    master = LocalMasterKeys(keyring=Keyring.parse(master_entry))
    key_id, wrapped = await master.wrap(b"k" * 32, b"aad")
    assert (await master.unwrap(key_id, wrapped, b"aad")) == b"k" * 32
    with pytest.raises(DecryptionError):
        await master.unwrap("other", wrapped, b"aad")


# ----------------------------------------------------------------------------- Vault KV v2


@pytest.fixture
def vault(vault_server: Any) -> VaultSecretProvider:
    return VaultSecretProvider(
        url=vault_server.url, token=SecretStr(vault_server.state.token), path_prefix="gf-test"
    )


async def test_vault_set_get_list_delete_over_the_kv_v2_protocol(
    vault: VaultSecretProvider, vault_server: Any, remember_secret: Callable[..., None]
) -> None:
    assert isinstance(vault, WritableSecretProvider)
    value = secret_value()
    remember_secret(value)
    await vault.set("openai/api-key", value)
    await vault.set("db", "first")
    await vault.set("db", "second")  # a new version
    assert (await vault.get("openai/api-key")).get_secret_value() == value
    assert (await vault.get("db")).get_secret_value() == "second"
    assert vault_server.state.secrets["gf-test/db"][-1]["data"] == {"value": "second"}
    assert await vault.list() == ["db", "openai/"]
    assert await vault.delete("db") and not await vault.delete("db")
    with pytest.raises(NotFound):
        await vault.get("db")
    # every request carried the token header and went to the KV v2 paths
    assert {path.split("/")[3] for _, path in vault_server.state.requests} <= {"data", "metadata"}


async def test_vault_reads_other_fields(vault: VaultSecretProvider, vault_server: Any) -> None:
    vault_server.state.secrets["gf-test/postgres"] = [
        {"data": {"username": "app", "password": "pw-123456"}, "created_time": 0, "deleted": False}
    ]
    assert (await vault.get("postgres#password")).get_secret_value() == "pw-123456"
    with pytest.raises(NotFound, match="no field 'value'"):
        await vault.get("postgres")


async def test_a_wrong_vault_token_never_leaks(
    vault_server: Any, remember_secret: Callable[..., None]
) -> None:
    wrong = "hvs.wrong-" + secrets.token_urlsafe(12)
    remember_secret(wrong)
    provider = VaultSecretProvider(url=vault_server.url, token=SecretStr(wrong))
    with pytest.raises(ServiceUnavailable, match="denied") as excinfo:
        await provider.get("x")
    rendered = f"{excinfo.value!s} {excinfo.value!r} {excinfo.value.__cause__!r} {excinfo.value.__context__!r}"
    assert wrong not in rendered and vault_server.state.token not in rendered
    assert excinfo.value.__suppress_context__


async def test_an_unreachable_vault_is_service_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAULT_TOKEN", "hvs.env-token-for-test")
    provider = VaultSecretProvider(url="http://127.0.0.1:9", timeout_s=1)
    with pytest.raises(ServiceUnavailable, match="unavailable"):
        await provider.get("x")
    dumped = dump_component(provider)
    assert "hvs.env-token-for-test" not in json.dumps(dumped)
    assert dumped["params"]["token_env"] == "VAULT_TOKEN"


def test_vault_needs_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VAULT_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="VAULT_TOKEN"):
        VaultSecretProvider(url="http://127.0.0.1:8200")


async def test_vault_validates_names_and_sizes(vault: VaultSecretProvider) -> None:
    with pytest.raises(ValidationError):
        await vault.get("../../sys/seal")
    with pytest.raises(ValidationError):
        await vault.set("big", "x" * (64 * 1024 + 1))


@pytest.mark.integration
@pytest.mark.skipif(
    not os.environ.get("VAULT_ADDR"),
    reason="no HashiCorp Vault here: set VAULT_ADDR and VAULT_TOKEN to run against a real one",
)
async def test_against_a_real_vault(remember_secret: Callable[..., None]) -> None:
    token = os.environ.get("VAULT_TOKEN", "")
    remember_secret(token)
    provider = VaultSecretProvider(
        url=os.environ["VAULT_ADDR"],
        mount=os.environ.get("GF_TEST_VAULT_MOUNT", "secret"),
        path_prefix=f"gf-test-{uuid.uuid4().hex[:8]}",
    )
    value = secret_value()
    remember_secret(value)
    await provider.set("probe", value)
    try:
        assert (await provider.get("probe")).get_secret_value() == value
        assert "probe" in await provider.list()
    finally:
        assert await provider.delete("probe")
    with pytest.raises(NotFound):
        await provider.get("probe")


def test_errors_from_providers_are_platform_errors() -> None:
    assert issubclass(DecryptionError, GFError)
