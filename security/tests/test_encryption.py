"""Encryption at rest: AES-GCM with key ids in the header, tamper evidence, rotation without downtime."""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from genai_factory.security.encryption import (
    MAGIC,
    AtRestCipher,
    DecryptionError,
    Keyring,
    new_key_entry,
)
from genai_factory.shared.errors import ConfigError
from genai_factory.shared.factory import dump_component

K1 = new_key_entry("k1")
K2 = new_key_entry("k2")
KX = new_key_entry("kx")  # same length id as k1: for header-swap attempts


@pytest.fixture(autouse=True)
def _remember_keys(remember_secret: Callable[..., None]) -> None:
    for entry in (K1, K2, KX):
        remember_secret(entry.split(":", 1)[1])


def cipher(*entries: str) -> AtRestCipher:
    return AtRestCipher(keyring=Keyring.parse(",".join(entries)))


def test_round_trip_with_the_key_id_in_an_authenticated_header() -> None:
    c = cipher(K1)
    blob = c.encrypt(b"stored response", b"response:7")
    assert blob.startswith(MAGIC + bytes([2]) + b"k1")
    assert b"stored response" not in blob
    assert c.decrypt(blob, b"response:7") == b"stored response"
    assert c.encrypt(b"same", b"") != c.encrypt(b"same", b"")  # fresh nonce every time
    assert c.key_id_of(blob) == "k1" and not c.needs_reencryption(blob)


def test_tampering_and_context_swaps_are_detected() -> None:
    c = cipher(K1, KX)
    blob = bytearray(c.encrypt(b"audit payload", b"audit:1"))
    with pytest.raises(DecryptionError, match="another context"):
        c.decrypt(bytes(blob), b"audit:2")  # moved to another record
    flipped = bytearray(blob)
    flipped[-1] ^= 1
    with pytest.raises(DecryptionError):
        c.decrypt(bytes(flipped), b"audit:1")
    relabelled = bytes(blob).replace(b"k1", b"kx", 1)  # claim another key sealed it
    with pytest.raises(DecryptionError) as excinfo:
        c.decrypt(relabelled, b"audit:1")
    assert "audit payload" not in str(excinfo.value)
    for junk in (b"", b"GFE1", b"XXXX" + bytes(40), MAGIC + b"\x02k1" + bytes(10)):
        with pytest.raises(DecryptionError):
            c.decrypt(junk)
    with pytest.raises(DecryptionError, match="malformed"):
        c.decrypt(MAGIC + b"\x02\xff\xfe" + bytes(40))


def test_rotation_without_downtime() -> None:
    """Deploy k2 as current while k1 ciphertexts exist; every read succeeds before, during and
    after the background re-encryption; then k1 is retired."""
    before = cipher(K1)
    records = {
        f"prompt:{i}": before.encrypt_text(f"prompt text {i}", context=f"prompt:{i}")
        for i in range(20)
    }
    during = cipher(K2, K1)
    for n, record_id in enumerate(sorted(records)):
        # readers see a mix of k1 and k2 ciphertexts, and every one opens
        for rid, text in records.items():
            assert during.decrypt_text(text, context=rid).startswith("prompt text")
        records[record_id] = during.reencrypt_text(records[record_id], context=record_id)
        assert during.key_id_of_text(records[record_id]) == "k2"
        assert sum(during.key_id_of_text(t) == "k1" for t in records.values()) == 19 - n
    assert during.reencrypt_text(records["prompt:0"], context="prompt:0") == records["prompt:0"]
    after = cipher(K2)  # k1 retired
    for rid, text in records.items():
        assert after.decrypt_text(text, context=rid) == f"prompt text {rid.split(':')[1]}"
    old = before.encrypt(b"straggler")
    with pytest.raises(DecryptionError, match="unknown encryption key id 'k1'"):
        after.decrypt(old)
    migrated = during.reencrypt(old)
    assert during.key_id_of(migrated) == "k2" and during.reencrypt(migrated) is migrated
    assert after.decrypt(migrated) == b"straggler"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "no keys"),
        ("k1", "kid:base64key"),
        ("k1:!!!", "base64"),
        (f"{K1},{K1}", "twice"),
        ("k1:" + base64.b64encode(b"short").decode(), "32 bytes"),
        ("bad id:" + K1.split(":")[1], "invalid key id"),
    ],
)
def test_keyring_parsing_errors(text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Keyring.parse(text)


def test_the_keyring_never_shows_key_material(monkeypatch: pytest.MonkeyPatch) -> None:
    ring = Keyring.parse(f"{K2},{K1}")
    assert ring.current == "k2" and ring.key_ids == ["k1", "k2"]
    assert K1.split(":")[1] not in repr(ring)
    assert Keyring.parse(ring.export()).export() == ring.export()
    with pytest.raises(ConfigError):
        Keyring({"k": b"x" * 32}, current="other")
    with pytest.raises(ConfigError, match="key id"):
        new_key_entry("no spaces")
    monkeypatch.delenv("GF_SECURITY_DATA_KEYS", raising=False)
    with pytest.raises(ConfigError, match="GF_SECURITY_DATA_KEYS"):
        AtRestCipher()
    monkeypatch.setenv("GF_SECURITY_DATA_KEYS", K1)
    from_env = AtRestCipher()
    assert dump_component(from_env) == {
        "type": "genai_factory.security.encryption:AtRestCipher",
        "params": {"keys_env": "GF_SECURITY_DATA_KEYS"},
    }
    assert AtRestCipher(keys=SecretStr(K1)).decrypt(from_env.encrypt(b"x")) == b"x"


def test_text_form_errors() -> None:
    c = cipher(K1)
    for text in ("plain text", "gfe1.!!!", "gfe1.\u00e9"):
        with pytest.raises(DecryptionError):
            c.decrypt_text(text)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300), st.binary(max_size=40))
def test_round_trip_any_bytes(plaintext: bytes, aad: bytes) -> None:
    c = cipher(K1)
    assert c.decrypt(c.encrypt(plaintext, aad), aad) == plaintext


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_decrypt(junk: bytes) -> None:
    with pytest.raises(DecryptionError):
        cipher(K1).decrypt(junk)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_never_decrypts(junk: str) -> None:
    with pytest.raises(DecryptionError):
        cipher(K1).decrypt_text(junk)
