"""API keys: issue, verify, expire, rotate, revoke, list; SQLite (kill -9 safe) and PostgreSQL."""

from __future__ import annotations

import hashlib
import hmac
import re
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from genai_factory.security import apikeys
from genai_factory.security.apikeys import APIKeyAuthenticator, APIKeyManager, hash_api_key
from genai_factory.security.keystore import (
    APIKeyStore,
    PostgresAPIKeyStore,
    SQLiteAPIKeyStore,
    open_key_store,
)
from genai_factory.shared.contracts import Authenticator
from genai_factory.shared.errors import ConfigError, Conflict, NotFound, Unauthorized
from genai_factory.shared.factory import build_component, dump_component

KEY_SHAPE = re.compile(r"gf-[0-9a-f]{16}_[A-Za-z0-9_-]{43}")


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[APIKeyStore]:
    if request.param == "sqlite":
        key_store: APIKeyStore = SQLiteAPIKeyStore(str(tmp_path / "keys.db"))
    else:
        key_store = PostgresAPIKeyStore(request.getfixturevalue("postgres_schema_dsn"))
    yield key_store
    await key_store.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def manager(store: APIKeyStore, hash_secret: SecretStr, clock: Clock) -> APIKeyManager:
    return APIKeyManager(store, secret=hash_secret, clock=clock)


async def test_a_key_is_prefixed_random_and_authenticates_as_its_owner(
    manager: APIKeyManager, remember_secret: Callable[..., None]
) -> None:
    issued = await manager.create(
        "ci pipeline",
        subject="svc:ci",
        org_id="acme",
        team_id="ml",
        user_id="alice",
        roles=["viewer", "invoker"],
        scopes=["model:invoke"],
    )
    other = await manager.create("second", subject="svc:ci")
    remember_secret(issued.key, other.key)
    assert KEY_SHAPE.fullmatch(issued.key) and issued.key != other.key
    assert issued.key not in repr(issued)
    authenticator = APIKeyAuthenticator(manager)
    assert isinstance(authenticator, Authenticator)
    principal = await authenticator.authenticate({"Authorization": f"Bearer {issued.key}"})
    assert principal.subject == "svc:ci"
    assert (principal.org_id, principal.team_id, principal.user_id) == ("acme", "ml", "alice")
    assert principal.key_id == issued.key_id
    assert principal.roles == {"viewer", "invoker"}
    assert principal.scopes == {"model:invoke"}
    assert principal.auth_method == "api_key"
    via_header = await authenticator.authenticate({"x-api-key": issued.key})
    assert via_header.key_id == issued.key_id


async def test_only_a_keyed_hash_is_stored(
    manager: APIKeyManager, hash_secret: SecretStr, remember_secret: Callable[..., None]
) -> None:
    issued = await manager.create("k", subject="u")
    remember_secret(issued.key)
    record = await manager.store.get(issued.key_id)
    assert record is not None
    expected = hmac.new(
        hash_secret.get_secret_value().encode(), issued.key.encode(), hashlib.sha256
    ).hexdigest()
    assert record.key_hash == expected
    assert record.key_hash != hashlib.sha256(issued.key.encode()).hexdigest()  # keyed, not plain
    assert issued.key not in repr(record)


async def test_the_sqlite_file_never_holds_the_plaintext(
    tmp_path: Path, hash_secret: SecretStr, remember_secret: Callable[..., None]
) -> None:
    store = SQLiteAPIKeyStore(str(tmp_path / "keys.db"))
    manager = APIKeyManager(store, secret=hash_secret)
    issued = await manager.create("k", subject="u")
    remember_secret(issued.key)
    await store.close()
    secret_part = issued.key.split("_", 1)[1].encode()
    for file in sorted(tmp_path.iterdir()):  # noqa: ASYNC240 - a test reading its temp dir
        assert secret_part not in file.read_bytes(), file.name


@pytest.mark.parametrize(
    "mutate",
    [
        lambda k: k[:-1] + ("A" if k[-1] != "A" else "B"),  # wrong secret part
        lambda k: k.replace("gf-", "gf-f", 1)[:-1],  # shifted key id
        lambda k: "gf-" + "0" * 16 + "_" + k.split("_", 1)[1],  # unknown key id
        lambda k: k + "A",  # longer
        lambda k: "sk-" + k[3:],  # another prefix
    ],
)
async def test_a_tampered_key_is_refused(
    manager: APIKeyManager, mutate: Callable[[str], str], remember_secret: Callable[..., None]
) -> None:
    issued = await manager.create("k", subject="u")
    remember_secret(issued.key)
    with pytest.raises(Unauthorized, match="invalid API key"):
        await manager.verify(mutate(issued.key))


async def test_another_server_secret_cannot_verify_our_keys(
    store: APIKeyStore, hash_secret: SecretStr, remember_secret: Callable[..., None]
) -> None:
    issued = await APIKeyManager(store, secret=hash_secret).create("k", subject="u")
    remember_secret(issued.key)
    impostor = APIKeyManager(store, secret=SecretStr("another-secret-" + "y" * 32))
    with pytest.raises(Unauthorized):
        await impostor.verify(issued.key)


async def test_unknown_key_ids_cost_a_constant_time_comparison_too(
    manager: APIKeyManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, str]] = []
    real = hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(apikeys.hmac, "compare_digest", spy)
    with pytest.raises(Unauthorized):
        await manager.verify("gf-0123456789abcdef_" + "A" * 43)
    with pytest.raises(Unauthorized):
        await manager.verify("not-a-key-at-all")
    assert len(calls) == 2 and all(len(a) == len(b) == 64 for a, b in calls)


async def test_keys_expire(
    manager: APIKeyManager, clock: Clock, remember_secret: Callable[..., None]
) -> None:
    issued = await manager.create("short", subject="u", ttl_s=60)
    remember_secret(issued.key)
    assert (await manager.verify(issued.key)).key_id == issued.key_id
    clock.now += 61
    with pytest.raises(Unauthorized, match="expired"):
        await manager.verify(issued.key)


async def test_revocation_takes_effect_on_the_next_request(
    manager: APIKeyManager, remember_secret: Callable[..., None]
) -> None:
    issued = await manager.create("k", subject="u")
    remember_secret(issued.key)
    authenticator = APIKeyAuthenticator(manager)
    await authenticator.authenticate({"x-api-key": issued.key})
    revoked = await manager.revoke(issued.key_id)
    assert revoked.revoked_at is not None
    assert (await manager.revoke(issued.key_id)).revoked_at == revoked.revoked_at  # idempotent
    with pytest.raises(Unauthorized, match="revoked"):
        await authenticator.authenticate({"x-api-key": issued.key})
    with pytest.raises(NotFound):
        await manager.revoke("0" * 16)


async def test_rotation_keeps_the_old_key_for_the_grace_period_only(
    manager: APIKeyManager, clock: Clock, remember_secret: Callable[..., None]
) -> None:
    old = await manager.create("k", subject="svc", roles=["viewer"], scopes=["model:invoke"])
    new = await manager.rotate(old.key_id, grace_s=3600)
    remember_secret(old.key, new.key)
    assert new.key != old.key and new.record.roles == ("viewer",)
    assert new.record.scopes == ("model:invoke",)
    assert (await manager.verify(old.key)).replaced_by == new.key_id
    await manager.verify(new.key)
    clock.now += 3601
    with pytest.raises(Unauthorized, match="expired"):
        await manager.verify(old.key)
    await manager.verify(new.key)
    with pytest.raises(Conflict):
        await manager.rotate(old.key_id)


async def test_rotation_never_extends_an_expiring_key(
    manager: APIKeyManager, clock: Clock, remember_secret: Callable[..., None]
) -> None:
    old = await manager.create("k", subject="svc", ttl_s=100)
    new = await manager.rotate(old.key_id, grace_s=10_000)
    remember_secret(old.key, new.key)
    old_record = await manager.store.get(old.key_id)
    assert old_record is not None and old_record.expires_at == clock.now + 100
    assert new.record.expires_at == clock.now + 100  # same lifetime as the key it replaces
    with pytest.raises(ConfigError):
        await manager.rotate(new.key_id, grace_s=-1)


async def test_list_filters_by_subject_and_never_shows_secrets(
    manager: APIKeyManager, remember_secret: Callable[..., None]
) -> None:
    a = await manager.create("a", subject="alice", user_id="alice")
    b = await manager.create("b", subject="bob", user_id="bob")
    remember_secret(a.key, b.key)
    assert [r.key_id for r in await manager.list("alice")] == [a.key_id]
    assert {r.key_id for r in await manager.list()} == {a.key_id, b.key_id}
    assert all(a.key not in repr(r) for r in await manager.list())


async def test_erasure_and_retention_hooks_delete_the_right_records(
    manager: APIKeyManager, clock: Clock, remember_secret: Callable[..., None]
) -> None:
    a = await manager.create("a", subject="alice", user_id="alice")
    b = await manager.create("b", subject="bob", user_id="bob", ttl_s=10)
    c = await manager.create("c", subject="carol", user_id="carol")
    remember_secret(a.key, b.key, c.key)
    assert await manager.store.delete_for_user("alice") == 1
    assert await manager.store.get(a.key_id) is None
    clock.now += 100
    await manager.revoke(c.key_id)
    assert await manager.store.purge_inactive_before(clock.now - 50) == 1  # b expired 90 s ago
    assert await manager.store.get(b.key_id) is None
    assert await manager.store.get(c.key_id) is not None  # revoked just now: kept
    assert await manager.store.purge_inactive_before(clock.now + 1) == 1
    assert await manager.store.list() == []


async def test_inserting_the_same_key_id_twice_conflicts(
    manager: APIKeyManager, remember_secret: Callable[..., None]
) -> None:
    issued = await manager.create("k", subject="u")
    remember_secret(issued.key)
    with pytest.raises(Conflict):
        await manager.store.insert(issued.record)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "a\nb"}, "name"),
        ({"subject": ""}, "subject"),
        ({"ttl_s": 0}, "ttl_s"),
    ],
)
async def test_create_validates_its_input(
    manager: APIKeyManager, kwargs: dict[str, object], field: str
) -> None:
    arguments: dict[str, object] = {"name": "ok", "subject": "u", **kwargs}
    name = arguments.pop("name")
    with pytest.raises(ConfigError) as excinfo:
        await manager.create(str(name), **arguments)  # type: ignore[arg-type]
    assert excinfo.value.param == field


def test_the_hashing_secret_must_be_long_and_is_never_dumped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SQLiteAPIKeyStore(str(tmp_path / "k.db"))
    monkeypatch.delenv("GF_SECURITY_API_KEY_SECRET", raising=False)
    with pytest.raises(ConfigError, match="GF_SECURITY_API_KEY_SECRET"):
        APIKeyManager(store)
    with pytest.raises(ConfigError, match="too short"):
        APIKeyManager(store, secret=SecretStr("short"))
    with pytest.raises(ConfigError, match="prefix"):
        APIKeyManager(store, secret=SecretStr("s" * 32), prefix="GF_")
    monkeypatch.setenv("GF_SECURITY_API_KEY_SECRET", "e" * 40)
    spec = {
        "type": "genai_factory.security.apikeys:APIKeyAuthenticator",
        "params": {
            "manager": {
                "type": "genai_factory.security.apikeys:APIKeyManager",
                "params": {
                    "store": {
                        "type": "genai_factory.security.keystore:SQLiteAPIKeyStore",
                        "params": {"path": str(tmp_path / "k.db")},
                    }
                },
            }
        },
    }
    built = build_component(spec, Authenticator)
    dumped = dump_component(built)
    assert "e" * 40 not in str(dumped)
    assert dumped["params"]["manager"]["params"]["secret_env"] == "GF_SECURITY_API_KEY_SECRET"
    assert dump_component(build_component(dumped)) == dumped


def test_open_key_store_picks_the_backend() -> None:
    assert isinstance(open_key_store("postgres://h/db"), PostgresAPIKeyStore)
    assert isinstance(open_key_store("/tmp/x.db"), SQLiteAPIKeyStore)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=120))
def test_parse_key_id_accepts_only_our_shape(text: str) -> None:
    manager = APIKeyManager.__new__(APIKeyManager)
    manager.prefix = "gf-"
    key_id = manager.parse_key_id(text)
    if key_id is not None:
        assert text.startswith("gf-" + key_id + "_") and re.fullmatch(r"[0-9a-f]{16}", key_id)


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=80))
async def test_random_strings_are_refused_with_unauthorized_only(tmp_path: Path, text: str) -> None:
    store = SQLiteAPIKeyStore(str(tmp_path / "random.db"))
    manager = APIKeyManager(store, secret=SecretStr("r" * 32))
    try:
        with pytest.raises(Unauthorized):
            await manager.verify(text)
    finally:
        await store.close()


def test_a_created_key_survives_kill_9(tmp_path: Path, hash_secret: SecretStr) -> None:
    """The creating process dies by SIGKILL right after create() returns; the key is there."""
    db = tmp_path / "durable.db"
    script = textwrap.dedent(
        f"""
        import asyncio, os, signal, sys
        from pydantic import SecretStr
        from genai_factory.security.apikeys import APIKeyManager
        from genai_factory.security.keystore import SQLiteAPIKeyStore

        async def main():
            manager = APIKeyManager(SQLiteAPIKeyStore({str(db)!r}), secret=SecretStr(sys.argv[1]))
            issued = await manager.create("durable", subject="svc")
            sys.stdout.write(issued.key + "\\n")
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)

        asyncio.run(main())
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script, hash_secret.get_secret_value()],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == -9, result.stderr
    key = result.stdout.strip()
    assert KEY_SHAPE.fullmatch(key)

    async def check() -> str:
        store = SQLiteAPIKeyStore(str(db))
        try:
            return (await APIKeyManager(store, secret=hash_secret).verify(key)).subject
        finally:
            await store.close()

    import asyncio

    assert asyncio.run(check()) == "svc"


def test_hash_api_key_is_hmac_sha256() -> None:
    assert (
        hash_api_key("gf-x", b"k" * 32) == hmac.new(b"k" * 32, b"gf-x", hashlib.sha256).hexdigest()
    )
