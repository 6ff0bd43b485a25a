"""``gf cost``: inspect budgets and where they stand.

- ``gf cost budgets show``: the budgets a config declares;
- ``gf cost budgets usage --team research``: each budget that applies to that caller, with its
  current window's usage (counters include reservations still held);
- ``gf cost budgets recover``: write to the ledger what a crash left between counter and ledger.

The config file is a YAML file (``--config``, or ``$GF_COST_CONFIG``) in the format of
:func:`genai_factory.cost.budgets.load_budget_policy`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from typing import Any, TypeVar

import click

from genai_factory.cost.budgets import BudgetPolicyEngine, load_budget_policy
from genai_factory.shared.models import Principal

__all__ = ["cost"]

T = TypeVar("T")

_config_option = click.option(
    "--config",
    "config_path",
    envvar="GF_COST_CONFIG",
    required=True,
    type=click.Path(dir_okay=False),
    help="budgets YAML file (default: $GF_COST_CONFIG)",
)


def _run(engine: BudgetPolicyEngine, work: Coroutine[Any, Any, T]) -> T:
    async def run_and_close() -> T:
        try:
            return await work
        finally:
            await engine.close()

    return asyncio.run(run_and_close())


@click.group("cost")
def cost() -> None:
    """Cost optimisation: token and money budgets."""


@cost.group("budgets")
def budgets_group() -> None:
    """Token and money budgets."""


@budgets_group.command("show")
@_config_option
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
def show(config_path: str, as_json: bool) -> None:
    """List the budgets the config declares."""
    engine = load_budget_policy(config_path)
    if as_json:
        rows = [budget.model_dump(mode="json") for budget in engine.budgets]
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo("| budget | scope | period | limit | soft alert at | at the limit |")
    click.echo("|---|---|---|---|---|---|")
    for budget in engine.budgets:
        scope = budget.scope + (f" {budget.id}" if budget.id else " (each)")
        soft = "-" if budget.soft_units is None else budget.describe_units(budget.soft_units)
        action = {
            "hard": "block",
            "downgrade": f"downgrade to {budget.downgrade_to}",
            "soft": "alert",
        }[budget.mode]
        period = "each request" if budget.scope == "request" else budget.period
        click.echo(
            f"| {budget.name} | {scope} | {period} | "
            f"{budget.describe_units(budget.limit_units)} | {soft} | {action} |"
        )


@budgets_group.command("usage")
@_config_option
@click.option("--org", "org_id", default=None, help="the caller's org id")
@click.option("--team", "team_id", default=None, help="the caller's team id")
@click.option("--user", "user_id", default=None, help="the caller's user id")
@click.option("--key", "key_id", default=None, help="the caller's API key id")
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
def usage(
    config_path: str,
    org_id: str | None,
    team_id: str | None,
    user_id: str | None,
    key_id: str | None,
    as_json: bool,
) -> None:
    """Show the current window's usage of every budget that applies to a caller."""
    if not any((org_id, team_id, user_id, key_id)):
        raise click.UsageError("name the caller: at least one of --org, --team, --user, --key")
    engine = load_budget_policy(config_path)
    subject = key_id or user_id or team_id or org_id or "cli"
    principal = Principal(
        subject=subject, org_id=org_id, team_id=team_id, user_id=user_id, key_id=key_id
    )
    rows = _run(engine, engine.usage(principal))
    if as_json:
        data = [
            {
                "budget": r.budget,
                "scope": r.scope,
                "window": r.window,
                "unit": r.unit,
                "used": str(r.used),
                "limit": str(r.limit),
                "mode": r.mode,
            }
            for r in rows
        ]
        click.echo(json.dumps(data, indent=2))
        return
    if not rows:
        click.echo("no budget applies to this caller")
        return
    click.echo("| budget | scope | window | used | limit | used % |")
    click.echo("|---|---|---|---|---|---|")
    for r in rows:
        percent = "-" if r.limit == 0 else f"{r.ratio * 100:.1f}%"
        click.echo(
            f"| {r.budget} | {r.scope} | {r.window} | {r.used.normalize():f} {r.unit} | "
            f"{r.limit.normalize():f} {r.unit} | {percent} |"
        )


@budgets_group.command("recover")
@_config_option
def recover(config_path: str) -> None:
    """Finish settlements a crash interrupted: write their records to the ledger."""
    engine = load_budget_policy(config_path)
    count = _run(engine, engine.recover())
    click.echo(f"recovered {count} cost records")
