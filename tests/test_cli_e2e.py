"""The installed `gf` command, run as a user would."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

GF = Path(sys.executable).parent / "gf"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(GF), *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_help_lists_every_installed_module_command() -> None:
    result = run("--help")
    assert result.returncode == 0, result.stderr
    contributed = {ep.name for ep in importlib.metadata.entry_points(group="genai_factory.cli")}
    assert "serving" in contributed
    for name in contributed | {"config", "modules"}:
        assert f"  {name} " in result.stdout or f"  {name}\n" in result.stdout, name
    assert "unavailable" not in result.stdout


def test_the_long_name_is_the_same_command() -> None:
    long = subprocess.run(
        [str(GF.with_name("genai-factory")), "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert long.returncode == 0
    assert long.stdout.startswith("genai-factory, version ")


def test_bad_config_is_one_clear_line(tmp_path: Path) -> None:
    bad = tmp_path / "gf.yaml"
    bad.write_text("log_level: LOUD\n")
    result = run("config", "show", "--config", str(bad))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "log_level" in result.stderr and "GF_LOG_LEVEL" in result.stderr


@pytest.mark.integration
def test_the_local_model_answers_through_the_cli_offline() -> None:
    result = run("serving", "chat", "--no-stream", "--max-tokens", "16", "What is 1 plus 1?")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
