"""``gf cost budgets show | usage | recover`` through the real ``gf`` entry point group."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

# imported here, under its package name, before the doctest run imports the file on its own
from genai_factory.cost.cli import cost
from genai_factory.cost.ledger import SQLiteSpendLedger
from genai_factory.shared.cli import main, root
from genai_factory.shared.models import CostRecord


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "budgets.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "cost": {
                    "budgets": [
                        {"scope": "team", "period": "monthly", "limit_usd": "50"},
                        {
                            "scope": "user",
                            "id": "alice",
                            "period": "daily",
                            "limit_tokens": 1000,
                            "downgrade_to": "small",
                            "soft_ratio": None,
                        },
                        {"scope": "request", "limit_usd": "0.5", "hard": False},
                    ],
                    "ledger": {
                        "type": "genai_factory.cost.ledger:SQLiteSpendLedger",
                        "params": {"path": str(tmp_path / "ledger.sqlite3")},
                    },
                }
            }
        )
    )
    return path


def test_show_lists_the_budgets(config_file: Path) -> None:
    result = CliRunner().invoke(root, ["cost", "budgets", "show", "--config", str(config_file)])
    assert result.exit_code == 0, result.output
    assert "| team-monthly-usd | team (each) | monthly | 50 USD | 40 USD | block |" in result.output
    assert (
        "| user=alice-daily-tokens | user alice | daily | 1000 tokens | - | downgrade to small |"
        in result.output
    )
    assert (
        "| request-each-usd | request (each) | each request | 0.5 USD | 0.4 USD | alert |"
        in result.output
    )
    as_json = CliRunner().invoke(
        root, ["cost", "budgets", "show", "--json"], env={"GF_COST_CONFIG": str(config_file)}
    )
    assert [b["name"] for b in json.loads(as_json.output)] == [
        "team-monthly-usd",
        "user=alice-daily-tokens",
        "request-each-usd",
    ]


def test_usage_reports_the_current_window_from_the_ledger(
    config_file: Path, tmp_path: Path
) -> None:
    async def spend() -> None:
        ledger = SQLiteSpendLedger(tmp_path / "ledger.sqlite3")
        await ledger.record(
            CostRecord(
                request_id="r1",
                model="m",
                team_id="research",
                user_id="alice",
                cost_usd=Decimal("12.5"),
                input_tokens=200,
                output_tokens=50,
            )
        )
        await ledger.close()

    asyncio.run(spend())
    args = ["cost", "budgets", "usage", "--config", str(config_file), "--team", "research"]
    result = CliRunner().invoke(root, [*args, "--user", "alice"])
    assert result.exit_code == 0, result.output
    assert "| team-monthly-usd | team:research | m" in result.output
    assert "| 12.5 usd | 50 usd | 25.0% |" in result.output
    assert "| 250 tokens | 1000 tokens | 25.0% |" in result.output
    as_json = json.loads(CliRunner().invoke(root, [*args, "--json"]).output)
    assert as_json[0]["used"] == "12.5" and as_json[0]["scope"] == "team:research"
    nobody = CliRunner().invoke(
        root, ["cost", "budgets", "usage", "--config", str(config_file), "--org", "x"]
    )
    assert "no budget applies" in nobody.output
    unnamed = CliRunner().invoke(root, ["cost", "budgets", "usage", "--config", str(config_file)])
    assert unnamed.exit_code == 2 and "--team" in unnamed.output


def test_gf_finds_the_cost_command_through_its_entry_point() -> None:
    assert root.get_command(None, "cost") is cost  # type: ignore[arg-type]


def test_recover_reports_what_it_wrote(config_file: Path) -> None:
    result = CliRunner().invoke(cost, ["budgets", "recover", "--config", str(config_file)])
    assert result.exit_code == 0 and "recovered 0 cost records" in result.output


def test_an_invalid_config_is_one_clear_line_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("budgets:\n  - {scope: team, limit_usd: 5, soft_ratio: 2}\n")
    with pytest.raises(SystemExit) as exited:
        main(["cost", "budgets", "show", "--config", str(bad)])
    assert exited.value.code == 1
    assert "budgets.0.soft_ratio" in capsys.readouterr().err
