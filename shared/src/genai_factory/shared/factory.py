"""The component factory: ``{type: "pkg.module:Class", params: {...}}`` -> object, and back.

Params are validated against the class's ``__init__`` type hints before the class is called, so a
bad config raises :class:`~genai_factory.shared.errors.ConfigError` naming the field, never a
traceback from deep inside the component. A param whose value is itself a ``{type: ...}`` mapping
builds a nested component, so a whole pipeline is one config tree.

A component dumps itself back with :func:`dump_component`: it either defines ``to_params()`` or
keeps each ``__init__`` argument under the same attribute name (or with a leading underscore).

Example:
    >>> from genai_factory.shared.factory import build_component, dump_component
    >>> spec = {"type": "genai_factory.shared.settings:RedisSettings",
    ...         "params": {"key_prefix": "app:"}}
    >>> build_component(spec).key_prefix
    'app:'
    >>> dump_component(build_component(spec))["params"]
    {'key_prefix': 'app:'}
    >>> build_component({"type": "genai_factory.shared.settings:RedisSettings",
    ...                  "params": {"key_prefix": ["x"]}}, where="cache.redis")
    Traceback (most recent call last):
    ...
    genai_factory.shared.errors.ConfigError: invalid value for 'cache.redis.params.key_prefix' of ...
"""

from __future__ import annotations

import importlib
import inspect
import types
import typing
from collections.abc import Mapping
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import PurePath
from typing import Any, TypeVar, cast

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from genai_factory.shared.errors import ConfigError

__all__ = ["ComponentSpec", "build_component", "dump_component", "import_object"]

T = TypeVar("T")

_IMPORT_PATH = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$"


class ComponentSpec(BaseModel):
    """A component in config: its import path and the keyword arguments to build it with."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(pattern=_IMPORT_PATH, description="'package.module:ClassName'")
    params: dict[str, Any] = Field(default_factory=dict)


def import_object(path: str, *, where: str = "type") -> Any:
    """Import ``package.module:Attr`` (dots after the colon walk attributes)."""
    if not isinstance(path, str) or ":" not in path:
        raise ConfigError(
            f"'{where}' must be an import path like 'package.module:ClassName', got {path!r}",
            param=where,
        )
    module_name, _, attr_path = path.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"'{where}': cannot import module '{module_name}' ({exc})", param=where
        ) from None
    for attr in attr_path.split("."):
        try:
            obj = getattr(obj, attr)
        except AttributeError:
            raise ConfigError(
                f"'{where}': module '{module_name}' has no attribute '{attr_path}'", param=where
            ) from None
    return obj


def _is_spec(value: Any) -> bool:
    return isinstance(value, Mapping) and "type" in value and set(value) <= {"type", "params"}


def _keeps_mapping(annotation: Any) -> bool:
    """True when a parameter is typed as raw mapping data, so a ``{type: ...}`` value stays data."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        candidates: tuple[Any, ...] = typing.get_args(annotation)
    else:
        candidates = (annotation,)
    return any((typing.get_origin(c) or c) in (dict, Mapping) for c in candidates)


def _signature_model(target: Any) -> tuple[type[BaseModel], set[str], bool]:
    """A pydantic model of a class's or a factory function's keyword parameters."""
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):  # some C types publish no signature: pass params through
        return _PASS_THROUGH, set(), True
    try:
        hints = typing.get_type_hints(
            target.__init__ if inspect.isclass(target) else target, include_extras=True
        )
    except Exception:  # unresolvable forward references: fall back to the signature's own
        hints = {}
    fields: dict[str, Any] = {}
    accepts_kwargs = False
    for name, param in signature.parameters.items():
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            accepts_kwargs = True
            continue
        if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.POSITIONAL_ONLY):
            continue
        annotation = hints.get(name, param.annotation)
        if annotation is inspect.Parameter.empty or isinstance(annotation, str):
            annotation = Any
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[name] = (annotation, default)
    model = pydantic.create_model(
        f"{getattr(target, '__name__', 'Component')}Params",
        __config__=ConfigDict(
            arbitrary_types_allowed=True, extra="allow" if accepts_kwargs else "forbid"
        ),
        **fields,
    )
    return cast(type[BaseModel], model), set(fields), accepts_kwargs


class _PassThrough(BaseModel):
    model_config = ConfigDict(extra="allow")


_PASS_THROUGH: type[BaseModel] = _PassThrough


def build_component(
    spec: ComponentSpec | Mapping[str, Any], expected: type[T] | None = None, *, where: str = ""
) -> T:
    """Build the object ``spec`` describes; check it against ``expected`` (a class or Protocol).

    ``where`` is the spec's place in the config (e.g. ``gateway.guards.0``) and prefixes the
    field named in any ConfigError.
    """
    prefix = f"{where}." if where else ""
    if isinstance(spec, ComponentSpec):
        parsed = spec
    else:
        if not isinstance(spec, Mapping):
            raise ConfigError(
                f"'{where or 'component'}' must be a mapping with 'type' and 'params', "
                f"got {type(spec).__name__}",
                param=where or None,
            )
        try:
            parsed = ComponentSpec.model_validate(dict(spec))
        except pydantic.ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            field = prefix + ".".join(str(p) for p in first["loc"])
            raise ConfigError(f"invalid '{field}': {first['msg']}", param=field) from None

    target = import_object(parsed.type, where=f"{prefix}type")
    if not callable(target):
        raise ConfigError(f"'{prefix}type': {parsed.type} is not callable", param=f"{prefix}type")

    params = dict(parsed.params)
    # Classes and factory functions alike: params are checked against the signature and nested
    # specs are built, so a function can take components too.
    model, known, accepts_kwargs = _signature_model(target)
    hints = model.model_fields
    for name, value in list(params.items()):
        if name not in known and not accepts_kwargs:
            raise ConfigError(
                f"unknown parameter '{prefix}params.{name}' for {parsed.type} "
                f"(accepted: {', '.join(sorted(known)) or 'none'})",
                param=f"{prefix}params.{name}",
            )
        annotation = hints[name].annotation if name in hints else Any
        if _is_spec(value) and not _keeps_mapping(annotation):
            params[name] = build_component(value, where=f"{prefix}params.{name}")
        elif isinstance(value, list) and any(_is_spec(item) for item in value):
            params[name] = [
                build_component(item, where=f"{prefix}params.{name}.{i}")
                if _is_spec(item)
                else item
                for i, item in enumerate(value)
            ]
    try:
        validated = model.model_validate(params)
    except pydantic.ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        loc = ".".join(str(p) for p in first["loc"])
        field = f"{prefix}params.{loc}"
        kind = "missing" if first["type"] == "missing" else "invalid value for"
        raise ConfigError(
            f"{kind} '{field}' of {parsed.type}: {first['msg']}", param=field
        ) from None
    kwargs = {
        name: getattr(validated, name) for name in validated.model_fields_set if name in known
    }
    if accepts_kwargs and validated.model_extra:
        kwargs.update(validated.model_extra)

    try:
        obj = target(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"cannot build '{where or parsed.type}' ({parsed.type}): {exc}", param=where or None
        ) from None
    if expected is not None and not isinstance(obj, expected):
        raise ConfigError(
            f"'{where or 'component'}': {parsed.type} does not implement {expected.__name__}",
            param=f"{prefix}type",
        )
    return cast(T, obj)


def _dump_value(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, list | tuple | set | frozenset):
        return [_dump_value(item) for item in value]
    if isinstance(value, Mapping):
        return {str(key): _dump_value(item) for key, item in value.items()}
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, PurePath | Decimal | datetime | timedelta):
        return str(value)
    # anything else is a nested component
    return dump_component(value)


def dump_component(obj: Any) -> dict[str, Any]:
    """The ``{type, params}`` form of ``obj``, such that ``build_component`` rebuilds an equal object."""
    cls = type(obj)
    type_path = f"{cls.__module__}:{cls.__qualname__}"
    to_params = getattr(obj, "to_params", None)
    if callable(to_params):
        params = dict(to_params())
    else:
        params = {}
        signature = inspect.signature(cls)
        for name, param in signature.parameters.items():
            if param.kind in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL):
                continue
            for attr in (name, f"_{name}"):
                if hasattr(obj, attr):
                    value = getattr(obj, attr)
                    break
            else:
                raise ConfigError(
                    f"cannot dump {type_path}: it keeps no attribute for parameter '{name}' "
                    "and defines no to_params()",
                    param=name,
                )
            if param.default is not inspect.Parameter.empty and value == param.default:
                continue
            params[name] = value
    return {"type": type_path, "params": {key: _dump_value(val) for key, val in params.items()}}
