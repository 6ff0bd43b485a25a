from __future__ import annotations

import importlib.metadata
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from genai_factory.shared import cli


@click.command("hello")
def hello() -> None:
    """Say hello."""
    click.echo("hello from a plugin")


def fake_entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    group = cli.ENTRY_POINT_GROUP
    return {
        "hello": importlib.metadata.EntryPoint("hello", f"{__name__}:hello", group),
        "broken": importlib.metadata.EntryPoint("broken", "no_such_module_gf.cli:x", group),
        "notcmd": importlib.metadata.EntryPoint("notcmd", "os:getcwd", group),
    }


@pytest.fixture
def plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "_entry_points", fake_entry_points)


def test_help_lists_builtins_and_plugins_and_broken_ones_say_why(plugins: None) -> None:
    result = CliRunner().invoke(cli.root, ["--help"])
    assert result.exit_code == 0, result.output
    for name in ("config", "modules", "hello", "broken", "notcmd"):
        assert name in result.output
    assert "unavailable" in result.output
    assert CliRunner().invoke(cli.root, ["hello"]).output == "hello from a plugin\n"
    broken = CliRunner().invoke(cli.root, ["broken"])
    assert broken.exit_code == 1 and "could not be loaded" in broken.output
    assert CliRunner().invoke(cli.root, ["nope"]).exit_code == 2


def test_the_installed_modules_contribute_real_commands() -> None:
    names = {ep.name for ep in importlib.metadata.entry_points(group=cli.ENTRY_POINT_GROUP)}
    assert "serving" in names
    result = CliRunner().invoke(cli.root, ["modules"])
    assert "genai-factory-shared" in result.output


def test_config_show_masks_secrets_and_validate_checks_components(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(
        "master_key: sk-topsecret-123456789\ncomponents:\n"
        "  clock: {type: 'datetime:timedelta', params: {seconds: 5}}\n"
    )
    shown = CliRunner().invoke(cli.root, ["config", "show", "--config", str(good)])
    assert shown.exit_code == 0 and "topsecret" not in shown.output
    assert "**********" in shown.output
    valid = CliRunner().invoke(cli.root, ["config", "validate", str(good)])
    assert valid.exit_code == 0 and "1 components" in valid.output


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "components:\n  clock: {type: 'genai_factory.shared.settings:RedisSettings', params: {key_prefix: [1]}}\n",
            "components.clock.params.key_prefix",
        ),
        ("log_level: [\n", "at line 2"),
    ],
)
def test_main_turns_config_errors_into_one_line_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["config", "validate", str(bad)])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("configuration error:") and message in err
    assert "Traceback" not in err
