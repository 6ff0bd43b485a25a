"""Named components shared across the config: build once, refer to them anywhere.

A gateway config composes other modules' components by import path (the shared factory). Some
objects must be shared: the telemetry whose store the console reads is the one the observe stage
writes to. ``components:`` names such objects; any component's params (and the gateway's
component fields) refer to one with ``{$ref: NAME}`` or to one of its attributes with
``{$ref: NAME.attr.attr}``. String params may read the environment: ``"${VAR}"`` is replaced by
the variable's value (``$${`` keeps a literal ``${``); an unset variable is a ConfigError naming
the field. Params of plain functions (factories such as ``setup_telemetry``) get their nested
``{type, params}`` specs built too, as classes' params do.

Example:
    >>> import os
    >>> os.environ["GF_EXAMPLE_PREFIX"] = "app"
    >>> registry = ComponentRegistry({"redis": {
    ...     "type": "genai_factory.shared.settings:RedisSettings",
    ...     "params": {"key_prefix": "${GF_EXAMPLE_PREFIX}:"}}})
    >>> registry.resolve({"$ref": "redis.key_prefix"}, where="x")
    'app:'
    >>> registry.build({"$ref": "redis"}) is registry.get("redis")
    True
    >>> del os.environ["GF_EXAMPLE_PREFIX"]
"""

from __future__ import annotations

import inspect
import logging
import os
import re
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar, cast

from pydantic import BaseModel

from genai_factory.shared.errors import ConfigError
from genai_factory.shared.factory import build_component, import_object

__all__ = [
    "ComponentRegistry",
    "close_component",
    "expand_env",
    "expand_settings_env",
    "is_reference",
]

T = TypeVar("T")

logger = logging.getLogger("genai_factory.gateway")

REF_KEY = "$ref"
_REF = re.compile(r"^[A-Za-z_][\w-]*(\.[A-Za-z_]\w*)*$")
_ENV = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def is_reference(value: Any) -> bool:
    """True for ``{$ref: NAME[.attr...]}``."""
    return isinstance(value, Mapping) and set(value) == {REF_KEY}


def _is_spec(value: Any) -> bool:
    return isinstance(value, Mapping) and "type" in value and set(value) <= {"type", "params"}


def _spec_dict(spec: Any) -> Any:
    """A ComponentSpec or reference model as plain data; anything else unchanged."""
    if isinstance(spec, BaseModel):
        return spec.model_dump(by_alias=True)
    return spec


def _param_hints(target: Any) -> dict[str, Any]:
    """The type hints of a class's ``__init__`` or a function's parameters ({} if unreadable)."""
    try:
        return typing.get_type_hints(target.__init__ if inspect.isclass(target) else target)
    except Exception:  # unresolvable forward references: no hints, nested specs get built
        return {}


def _keeps_mapping(annotation: Any) -> bool:
    """A param typed as a mapping keeps a ``{type: ...}`` value as data (as the factory does)."""
    if annotation is None:
        return False
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        candidates: tuple[Any, ...] = typing.get_args(annotation)
    else:
        candidates = (annotation,)
    return any((typing.get_origin(c) or c) in (dict, Mapping) for c in candidates)


def expand_env(text: str, where: str) -> str:
    """``text`` with each ``${VAR}`` replaced by the variable (``$${`` keeps a literal ``${``)."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:  # "$${": an escaped literal "${"
            return "${"
        value = os.environ.get(name)
        if value is None:
            raise ConfigError(f"'{where}': environment variable '{name}' is not set", param=where)
        return value

    return _ENV.sub(replace, text)


def expand_settings_env(value: Any, where: str = "") -> Any:
    """Expand ``${VAR}`` in every string of settings data, except inside component params.

    A component's params are expanded when it is built, so a secret read from the environment
    reaches only that component, never the settings object.
    """
    if isinstance(value, str):
        return expand_env(value, where or "settings") if "${" in value else value
    if _is_spec(value):
        return value
    if isinstance(value, Mapping):
        return {
            key: expand_settings_env(item, f"{where}.{key}" if where else str(key))
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [expand_settings_env(item, f"{where}.{i}") for i, item in enumerate(value)]
    return value


class ComponentRegistry:
    """Builds the named components in order (each may refer to those before it).

    Args:
        specs: name -> ``{type, params}``; params may refer to earlier ones with ``{$ref}``.
    """

    def __init__(self, specs: Mapping[str, Any] | None = None) -> None:
        self.specs = {name: _spec_dict(spec) for name, spec in (specs or {}).items()}
        self._objects: dict[str, Any] = {}
        for name, spec in self.specs.items():
            if not _REF.match(name) or "." in name:
                raise ConfigError(
                    f"'components.{name}': a component name is letters, digits, '_' and '-'",
                    param=f"components.{name}",
                )
            self._objects[name] = self.build(spec, where=f"components.{name}")

    @property
    def names(self) -> list[str]:
        return list(self._objects)

    def get(self, path: str, where: str = "$ref") -> Any:
        """The component ``NAME`` or its attribute ``NAME.attr.attr``."""
        if not isinstance(path, str) or not _REF.match(path):
            raise ConfigError(f"'{where}': invalid reference {path!r}", param=where)
        name, *attributes = path.split(".")
        if name not in self._objects:
            known = ", ".join(self._objects) or "none defined"
            raise ConfigError(
                f"'{where}': no component named '{name}' in 'components' ({known})", param=where
            )
        value = self._objects[name]
        for attribute in attributes:
            try:
                value = getattr(value, attribute)
            except AttributeError:
                raise ConfigError(
                    f"'{where}': component '{name}' has no attribute path '{path}'", param=where
                ) from None
        return value

    def resolve(self, value: Any, where: str, *, build_specs: bool = True) -> Any:
        """``value`` with references replaced, ``${VAR}`` expanded and nested specs built.

        With ``build_specs`` False a ``{type, params}`` mapping stays data (its references and
        variables are still resolved): for params typed as a mapping.
        """
        if is_reference(value):
            return self.get(value[REF_KEY], where=where)
        if isinstance(value, str):
            return expand_env(value, where) if "${" in value else value
        if build_specs and _is_spec(value):
            return self.build(value, where=where)
        if isinstance(value, Mapping):
            return {
                key: self.resolve(item, f"{where}.{key}", build_specs=build_specs)
                for key, item in value.items()
            }
        if isinstance(value, list):
            return [
                self.resolve(item, f"{where}.{i}", build_specs=build_specs)
                for i, item in enumerate(value)
            ]
        return value

    def build(self, spec: Any, expected: type[T] | None = None, *, where: str = "") -> T:
        """A component from ``{type, params}`` or a ``{$ref}``, checked against ``expected``."""
        spec = _spec_dict(spec)
        if is_reference(spec):
            obj = self.get(spec[REF_KEY], where=where)
            if expected is not None and not isinstance(obj, expected):
                raise ConfigError(
                    f"'{where}': '{spec[REF_KEY]}' does not implement {expected.__name__}",
                    param=where,
                )
            return cast(T, obj)
        if not _is_spec(spec):
            raise ConfigError(
                f"'{where or 'component'}' must be {{type, params}} or {{$ref: NAME}}",
                param=where or None,
            )
        prefix = f"{where}." if where else ""
        params = spec.get("params") or {}
        if not isinstance(params, Mapping):
            raise ConfigError(f"'{prefix}params' must be a mapping", param=f"{prefix}params")
        hints = _param_hints(import_object(spec["type"], where=f"{prefix}type"))
        resolved = {
            key: self.resolve(
                value,
                f"{prefix}params.{key}",
                build_specs=not _keeps_mapping(hints.get(key)),
            )
            for key, value in params.items()
        }
        # objects built here pass through the factory's validation untouched
        return build_component({"type": spec["type"], "params": resolved}, expected, where=where)

    def owns(self, obj: Any) -> bool:
        """Whether ``obj`` is one of the named components (closed only with the registry)."""
        return any(obj is item for item in self._objects.values())

    async def aclose(self) -> None:
        """Close the named components, the last built first."""
        for name in reversed(list(self._objects)):
            await close_component(self._objects[name], name)


async def close_component(obj: Any, name: str = "") -> None:
    """Call ``aclose()``, ``close()`` or ``shutdown()`` (awaited when async); log failures."""
    for method in ("aclose", "close", "shutdown"):
        closer = getattr(obj, method, None)
        if callable(closer):
            try:
                result = closer()
                if inspect.isawaitable(result):
                    await result
            except Exception:
                logger.warning("closing component %s failed", name or type(obj).__name__)
            return
