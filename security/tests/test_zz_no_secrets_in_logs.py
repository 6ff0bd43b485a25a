"""Runs last: no secret the suite created reached any log record (genai_factory or root, DEBUG).

The session fixture ``log_capture`` (conftest.py) attaches a capturing handler before the first
test; every test registers the secrets it creates (API keys, client secrets, tokens, private keys,
master and data keys, Vault tokens, secret values). The same check runs again when the session
ends, covering anything that ran after this file.
"""

from __future__ import annotations

import logging
import secrets
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from genai_factory.security.apikeys import APIKeyManager
from genai_factory.security.compliance import ErasureRegistry
from genai_factory.security.encryption import Keyring, new_key_entry
from genai_factory.security.keystore import SQLiteAPIKeyStore
from genai_factory.security.secret_store import EncryptedSecretStore, LocalMasterKeys
from genai_factory.shared.errors import Unauthorized


def test_the_scanner_finds_a_planted_secret(
    leak_scanner: Callable[[list[logging.LogRecord], set[str]], list[str]],
) -> None:
    planted = "sk-planted-secret-value-123"
    in_message = logging.LogRecord(
        "genai_factory.x", logging.INFO, "f", 1, "key=%s", (planted,), None
    )
    in_extra = logging.LogRecord("genai_factory.x", logging.INFO, "f", 1, "key used", None, None)
    in_extra.api_key = planted
    try:
        raise ValueError(planted)
    except ValueError:
        in_traceback = logging.LogRecord(
            "root", logging.ERROR, "f", 1, "failed", None, sys.exc_info()
        )
    clean = logging.LogRecord("genai_factory.x", logging.INFO, "f", 1, "nothing here", None, None)
    for record in (in_message, in_extra, in_traceback):
        assert leak_scanner([record], {planted}), record.getMessage()
    assert leak_scanner([clean], {planted}) == []


async def exercise(tmp_path: Path, remember: Callable[..., None]) -> None:
    """A scenario of its own, so this file means something even when run alone."""
    store = SQLiteAPIKeyStore(str(tmp_path / "keys.db"))
    manager = APIKeyManager(store, secret=SecretStr("scan-" + secrets.token_urlsafe(32)))
    issued = await manager.create("scan", subject="scanner", user_id="scanner")
    remember(issued.key)
    with pytest.raises(Unauthorized):
        await manager.verify(issued.key[:-2] + "xx")
    rotated = await manager.rotate(issued.key_id, grace_s=0)
    remember(rotated.key)
    with pytest.raises(Unauthorized):
        await manager.verify(issued.key)
    await manager.revoke(rotated.key_id)
    with pytest.raises(Unauthorized):
        await manager.verify(rotated.key)
    entry = new_key_entry("scan")
    remember(entry.split(":", 1)[1])
    secret_store = EncryptedSecretStore(
        str(tmp_path / "s.json"), master=LocalMasterKeys(keyring=Keyring.parse(entry))
    )
    value = "scan-value-" + secrets.token_urlsafe(16)
    remember(value)
    await secret_store.set("scan", value)
    assert (await secret_store.get("scan")).get_secret_value() == value
    registry = ErasureRegistry()
    registry.register("api_keys", store.delete_for_user)
    await registry.erase("scanner")
    await store.close()


async def test_no_secret_reached_any_log_record(log_capture: Any, tmp_path: Path) -> None:
    await exercise(tmp_path, log_capture.remember)
    records = log_capture.handler.records
    ours = [r for r in records if r.name.startswith("genai_factory")]
    # the suite logs a lot (keys created, rejected, rotated; policies changed; secrets stored...)
    assert len(ours) >= 8, "the capture saw too little to mean anything"
    assert len(log_capture.secrets) >= 4, "too few secrets registered to mean anything"
    assert log_capture.leaks() == []
