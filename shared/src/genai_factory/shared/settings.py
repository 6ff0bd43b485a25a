"""Settings: a YAML file plus ``GF_*`` environment overrides, validated by pydantic-settings.

Precedence, highest first: keyword arguments, environment (``GF_LOG_LEVEL``, nested with ``__``:
``GF_REDIS__URL``), the YAML file, defaults. Secrets are ``SecretStr``: they print as ``**********``
and the logging redaction filter learns their values. Every problem is a ConfigError naming the
field and where it came from.

A module adds its own settings by subclassing :class:`GFSettings` (and may change the prefix with
:func:`settings_config`).

Example:
    >>> import os
    >>> from genai_factory.shared.settings import load_settings
    >>> os.environ["GF_LOG_LEVEL"] = "DEBUG"
    >>> load_settings().log_level
    'DEBUG'
    >>> del os.environ["GF_LOG_LEVEL"]
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, TypeVar

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from genai_factory.shared.errors import ConfigError
from genai_factory.shared.factory import ComponentSpec

__all__ = [
    "DatabaseSettings",
    "GFSettings",
    "RedisSettings",
    "iter_secret_values",
    "load_settings",
    "read_yaml",
    "settings_config",
]

S = TypeVar("S", bound=BaseSettings)

CONFIG_ENV_VAR = "GF_CONFIG"


def settings_config(prefix: str = "GF_", **overrides: Any) -> SettingsConfigDict:
    """The settings config every GenAI Factory settings class uses, with its own env prefix."""
    config = SettingsConfigDict(
        env_prefix=prefix,
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
        case_sensitive=False,
    )
    config.update(overrides)  # type: ignore[typeddict-item]
    return config


def read_yaml(path: Path) -> dict[str, Any]:
    """A YAML mapping from ``path``; ConfigError (with the line) if it is missing or malformed."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}", param=str(path)) from None
    except OSError as exc:
        raise ConfigError(
            f"cannot read config file {path}: {exc.strerror}", param=str(path)
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "malformed YAML"
        raise ConfigError(f"{path}{where}: {problem}", param=str(path)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: the top level must be a mapping, got {type(data).__name__}", param=str(path)
        )
    return data


class RedisSettings(BaseModel):
    """Where the shared (scaled) state lives; None keeps everything in-process."""

    model_config = ConfigDict(extra="forbid")

    url: SecretStr | None = Field(default=None, description="redis://host:6379/0")
    key_prefix: str = "gf:"


class DatabaseSettings(BaseModel):
    """SQLite file by default; a PostgreSQL DSN for real deployments."""

    model_config = ConfigDict(extra="forbid")

    url: SecretStr = Field(default=SecretStr("sqlite:///genai-factory.db"))


class GFSettings(BaseSettings):
    """Platform-wide settings. Modules subclass this and add their own fields."""

    model_config = settings_config()

    environment: Literal["dev", "test", "prod"] = "dev"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    log_format: Literal["json", "console"] = "json"
    data_dir: Path = Field(default=Path(".gf-data"), description="where embedded state files live")
    offline: bool = Field(default=True, description="forbid every model/data hub download")
    redis: RedisSettings = Field(default_factory=RedisSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    master_key: SecretStr | None = Field(default=None, description="admin key for management APIs")
    components: dict[str, ComponentSpec] = Field(default_factory=dict)

    @pydantic.field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Constructed directly, settings read kwargs, env and secret files; load_settings adds YAML.
        return init_settings, env_settings, file_secret_settings


def _merge(low: dict[str, Any], high: dict[str, Any]) -> dict[str, Any]:
    merged = dict(low)
    for key, value in high.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_settings(
    cls: type[S] = GFSettings,  # type: ignore[assignment]
    path: str | Path | None = None,
    **overrides: Any,
) -> S:
    """Load ``cls`` from YAML (``path`` or ``$GF_CONFIG``), the environment and ``overrides``.

    Raises ConfigError naming the field (dotted path) and the source to look at.
    """
    if path is None and os.environ.get(CONFIG_ENV_VAR):
        path = os.environ[CONFIG_ENV_VAR]
    file_data = read_yaml(Path(path)) if path else {}
    try:
        env_data = EnvSettingsSource(cls)()
    except Exception as exc:  # pydantic-settings raises SettingsError for undecodable env JSON
        raise ConfigError(f"invalid environment setting: {exc}") from None
    data = _merge(_merge(file_data, env_data), overrides)
    try:
        # init kwargs carry every layer already merged in precedence order
        return cls.model_validate(data)
    except pydantic.ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = ".".join(str(part) for part in first["loc"]) or "settings"
        prefix = str(cls.model_config.get("env_prefix", "GF_"))
        env_name = prefix + field.replace(".", "__").upper()
        origin = f"{path} or ${env_name}" if path else f"${env_name}"
        raise ConfigError(
            f"invalid setting '{field}' (from {origin}): {first['msg']}", param=field
        ) from None


def iter_secret_values(settings: BaseModel) -> Iterator[str]:
    """Every non-empty SecretStr value inside ``settings``, for the log redaction filter."""
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            secret = value.get_secret_value()
            if secret:
                yield secret
        elif isinstance(value, BaseModel):
            yield from iter_secret_values(value)
        elif isinstance(value, dict):
            for item in value.values():
                if isinstance(item, BaseModel):
                    yield from iter_secret_values(item)
