from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import Field, SecretStr

from genai_factory.shared.errors import ConfigError
from genai_factory.shared.settings import (
    GFSettings,
    iter_secret_values,
    load_settings,
    settings_config,
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("GF_"):
            monkeypatch.delenv(name)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gf.yaml"
    path.write_text(text)
    return path


def test_defaults_need_no_file_and_no_env() -> None:
    settings = load_settings()
    assert settings.log_level == "INFO" and settings.offline is True
    assert settings.redis.url is None


def test_env_beats_yaml_beats_defaults_and_kwargs_beat_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "log_level: warning\nenvironment: test\nredis:\n  key_prefix: 'y:'\n")
    assert load_settings(GFSettings, path).log_level == "WARNING"
    monkeypatch.setenv("GF_LOG_LEVEL", "error")
    monkeypatch.setenv("GF_REDIS__URL", "redis://127.0.0.1:6379/3")
    settings = load_settings(GFSettings, path)
    assert settings.log_level == "ERROR"
    assert settings.environment == "test"
    assert settings.redis.key_prefix == "y:"  # nested yaml survives a nested env override
    assert settings.redis.url is not None
    assert settings.redis.url.get_secret_value().endswith("/3")
    assert load_settings(GFSettings, path, log_level="DEBUG").log_level == "DEBUG"


def test_the_config_file_can_come_from_gf_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GF_CONFIG", str(write(tmp_path, "environment: prod\n")))
    assert load_settings().environment == "prod"


def test_secrets_never_print(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GF_MASTER_KEY", "sk-master-0123456789")
    monkeypatch.setenv("GF_DATABASE__URL", "postgresql://gf:pw123456@db/gf")
    settings = load_settings()
    assert "sk-master" not in repr(settings) and "pw123456" not in settings.model_dump_json()
    assert set(iter_secret_values(settings)) == {
        "sk-master-0123456789",
        "postgresql://gf:pw123456@db/gf",
    }


@pytest.mark.parametrize(
    ("yaml_text", "field"),
    [
        ("log_level: LOUD\n", "log_level"),
        ("offline: maybe\n", "offline"),
        ("colour: blue\n", "colour"),
        ("redis:\n  port: 1\n", "redis.port"),
        ("components:\n  guard: {type: 'not a path'}\n", "components.guard.type"),
    ],
)
def test_bad_values_name_the_field_and_where_to_look(
    tmp_path: Path, yaml_text: str, field: str
) -> None:
    path = write(tmp_path, yaml_text)
    with pytest.raises(ConfigError) as info:
        load_settings(GFSettings, path)
    assert info.value.param == field
    assert str(path) in info.value.message
    assert "GF_" + field.replace(".", "__").upper() in info.value.message


def test_bad_env_values_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GF_OFFLINE", "perhaps")
    with pytest.raises(ConfigError, match=r"\$GF_OFFLINE"):
        load_settings()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("log_level: [unclosed\n", r"at line \d+, column \d+"),
        ("- a\n- b\n", "must be a mapping"),
        ("a: b: c\n", "at line 1, column 5"),
    ],
)
def test_malformed_yaml_is_a_config_error_with_the_line(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(GFSettings, write(tmp_path, text))


def test_missing_file_and_empty_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(GFSettings, tmp_path / "nope.yaml")
    assert load_settings(GFSettings, write(tmp_path, "")).environment == "dev"


class ServingLikeSettings(GFSettings):
    model_config = settings_config("GF_TESTMOD_")
    model: str = "smollm2"
    api_key: SecretStr | None = None
    workers: int = Field(default=1, ge=1)


def test_modules_subclass_with_their_own_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GF_TESTMOD_WORKERS", "4")
    monkeypatch.setenv("GF_TESTMOD_API_KEY", "abcdefgh")
    settings = load_settings(ServingLikeSettings)
    assert settings.workers == 4
    assert "abcdefgh" in set(iter_secret_values(settings))
    monkeypatch.setenv("GF_TESTMOD_WORKERS", "0")
    with pytest.raises(ConfigError, match="GF_TESTMOD_WORKERS"):
        load_settings(ServingLikeSettings)
