"""The ``genai-factory`` command (alias ``gf``).

Modules contribute sub-commands through the ``genai_factory.cli`` entry point group: an entry
point named ``serving`` that points at a :class:`click.Command` becomes ``gf serving``. A module
that fails to import is listed with the reason instead of breaking the whole CLI.

Example (in a module's ``pyproject.toml``)::

    [project.entry-points."genai_factory.cli"]
    serving = "genai_factory.serving.cli:serving"
"""

from __future__ import annotations

import importlib.metadata
import json
import sys
from typing import Any

import click

from genai_factory.shared.errors import ConfigError, GFError
from genai_factory.shared.settings import GFSettings, load_settings

__all__ = ["ENTRY_POINT_GROUP", "PluginGroup", "main", "root"]

ENTRY_POINT_GROUP = "genai_factory.cli"


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


class _BrokenPlugin(click.Command):
    """Stands in for a plugin that failed to load, and says why when called."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(
            name, help=f"(unavailable: {reason})", short_help=f"(unavailable: {reason})"
        )
        self._reason = reason

    def invoke(self, ctx: click.Context) -> Any:
        raise click.ClickException(f"'{self.name}' could not be loaded: {self._reason}")


class PluginGroup(click.Group):
    """A click group whose extra commands come from entry points, loaded on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(_entry_points()))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        builtin = super().get_command(ctx, cmd_name)
        if builtin is not None:
            return builtin
        ep = _entry_points().get(cmd_name)
        if ep is None:
            return None
        try:
            command = ep.load()
        except Exception as exc:  # a broken module must not take the CLI down with it
            return _BrokenPlugin(cmd_name, f"{type(exc).__name__}: {exc}")
        if not isinstance(command, click.Command):
            return _BrokenPlugin(cmd_name, f"{ep.value} is not a click command")
        return command


@click.group(cls=PluginGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(importlib.metadata.version("genai-factory-shared"), prog_name="genai-factory")
def root() -> None:
    """GenAI Factory: gateway, serving, RAG, guardrails, caching and more, in one platform."""


@root.command("modules")
def modules_command() -> None:
    """List the installed GenAI Factory distributions and their versions."""
    rows = sorted(
        (dist.metadata["Name"], dist.version)
        for dist in importlib.metadata.distributions()
        if (dist.metadata["Name"] or "").startswith("genai-factory")
    )
    for name, version in rows:
        click.echo(f"{name:<40} {version}")


@root.group("config")
def config_group() -> None:
    """Inspect and validate settings."""


@config_group.command("show")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="YAML settings file (default: $GF_CONFIG)",
)
def config_show(config_path: str | None) -> None:
    """Print the effective settings as JSON, secrets masked."""
    settings = load_settings(GFSettings, config_path)
    click.echo(json.dumps(settings.model_dump(mode="json"), indent=2, default=str))


@config_group.command("validate")
@click.argument("config_path", type=click.Path(dir_okay=False))
def config_validate(config_path: str) -> None:
    """Check a settings file and every component spec in it; exit 1 with the reason if invalid."""
    from genai_factory.shared.factory import build_component

    settings = load_settings(GFSettings, config_path)
    for name, spec in settings.components.items():
        build_component(spec, where=f"components.{name}")
    click.echo(f"{config_path}: valid ({len(settings.components)} components)")


def main(argv: list[str] | None = None) -> None:
    """Entry point: runs the CLI and turns GenAI Factory errors into one clear line and exit 1."""
    try:
        root.main(args=argv, prog_name="gf", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except ConfigError as exc:
        click.echo(f"configuration error: {exc}", err=True)
        sys.exit(1)
    except GFError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
