"""Budgets from config: the shared component factory, YAML files, and errors that name the field."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genai_factory.cost.backends import InProcessBudgetBackend
from genai_factory.cost.budgets import Budget, BudgetPolicyEngine, load_budget_policy
from genai_factory.cost.ledger import PostgresSpendLedger, SQLiteSpendLedger
from genai_factory.cost.redis_backend import RedisBudgetBackend
from genai_factory.shared.contracts import BudgetPolicy, SpendLedger
from genai_factory.shared.errors import ConfigError
from genai_factory.shared.factory import build_component, dump_component

ENGINE = "genai_factory.cost.budgets:BudgetPolicyEngine"


def spec(tmp_path: Path, **params: Any) -> dict[str, Any]:
    params.setdefault(
        "ledger",
        {
            "type": "genai_factory.cost.ledger:SQLiteSpendLedger",
            "params": {"path": str(tmp_path / "l.sqlite3")},
        },
    )
    return {"type": ENGINE, "params": params}


def test_the_engine_builds_from_a_component_spec_and_dumps_back(tmp_path: Path) -> None:
    engine = build_component(
        spec(
            tmp_path,
            budgets=[
                {"scope": "team", "period": "daily", "limit_usd": 2.5, "soft_ratio": 0.9},
                {"scope": "request", "limit_tokens": 4000, "downgrade_to": "small"},
            ],
            prices={"big": {"input": 10, "output": 30}, "small": {"input": 0.15, "output": 0.6}},
            backend={
                "type": "genai_factory.cost.backends:InProcessBudgetBackend",
                "params": {"reservation_ttl_s": 60},
            },
        ),
        BudgetPolicy,
        where="gateway.budget",
    )
    assert isinstance(engine, BudgetPolicyEngine)
    assert (
        engine.budgets[0].limit_usd == Decimal("2.5") and engine.budgets[0].name == "team-daily-usd"
    )
    assert engine.prices.cost("small", 10**6, 0) == Decimal("0.15")
    assert (
        isinstance(engine.backend, InProcessBudgetBackend)
        and engine.backend.reservation_ttl_s == 60
    )
    assert isinstance(engine.ledger, SQLiteSpendLedger)
    dumped = dump_component(engine)
    rebuilt = build_component(dumped)
    assert rebuilt.budgets == engine.budgets
    assert rebuilt.prices.models == engine.prices.models
    assert dump_component(rebuilt) == dumped


def test_redis_and_postgres_components_build_from_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GF_TEST_LEDGER_DSN", "postgresql://nobody@127.0.0.1:1/none")
    engine = build_component(
        {
            "type": ENGINE,
            "params": {
                "budgets": [{"scope": "org", "limit_usd": "100"}],
                "backend": {
                    "type": "genai_factory.cost.redis_backend:RedisBudgetBackend",
                    "params": {"url": "redis://127.0.0.1:6379/0", "key_prefix": "app:"},
                },
                "ledger": {
                    "type": "genai_factory.cost.ledger:PostgresSpendLedger",
                    "params": {"dsn_env": "GF_TEST_LEDGER_DSN"},
                },
            },
        }
    )
    assert isinstance(engine.backend, RedisBudgetBackend) and engine.backend.key_prefix == "app:"
    assert isinstance(engine.ledger, PostgresSpendLedger) and isinstance(engine.ledger, SpendLedger)
    # the DSN stays in the environment: the dumped config names the variable only
    dumped = dump_component(engine)
    assert "nobody" not in str(dumped) and "GF_TEST_LEDGER_DSN" in str(dumped)


def test_default_engine_uses_in_process_counters_and_a_sqlite_ledger() -> None:
    engine = BudgetPolicyEngine()
    assert isinstance(engine.backend, InProcessBudgetBackend)
    assert isinstance(engine.ledger, SQLiteSpendLedger)
    assert engine.ledger.path == Path(".gf-data/cost-ledger.sqlite3")
    assert not engine.ledger.path.exists() or engine.ledger.path.is_file()  # opened lazily


@pytest.mark.parametrize(
    ("budget", "field"),
    [
        ({"scope": "team"}, "cost.params.budgets.0.limit_tokens"),
        ({"scope": "team", "limit_usd": 1, "limit_tokens": 5}, "budgets.0.limit_tokens"),
        ({"scope": "planet", "limit_usd": 1}, "budgets.0.scope"),
        ({"scope": "team", "period": "weekly", "limit_usd": 1}, "budgets.0.period"),
        ({"scope": "team", "limit_usd": -1}, "budgets.0.limit_usd"),
        ({"scope": "team", "limit_tokens": 1.5}, "budgets.0.limit_tokens"),
        ({"scope": "team", "limit_usd": 1, "soft_ratio": 1.5}, "budgets.0.soft_ratio"),
        ({"scope": "team", "limit_usd": 1, "hard": "maybe"}, "budgets.0.hard"),
        ({"scope": "team", "limit_usd": 1, "downgrade_to": ""}, "budgets.0.downgrade_to"),
        ({"scope": "team", "limit_usd": 1, "name": "bad name!"}, "budgets.0.name"),
        ({"scope": "request", "id": "x", "limit_usd": 1}, "budgets.0.id"),
        ({"scope": "team", "limit_usd": 1, "typo": 1}, "budgets.0.typo"),
    ],
)
def test_invalid_budgets_raise_config_error_naming_the_field(
    tmp_path: Path, budget: dict[str, Any], field: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        build_component(spec(tmp_path, budgets=[budget]), where="cost")
    assert caught.value.param is not None and field in caught.value.param


def test_duplicate_budget_names_and_bad_params_are_config_errors(tmp_path: Path) -> None:
    same = {"scope": "team", "limit_usd": 1}
    with pytest.raises(ConfigError) as caught:
        build_component(spec(tmp_path, budgets=[same, same]))
    assert caught.value.param == "budgets.1.name"
    with pytest.raises(ConfigError) as caught:
        build_component(spec(tmp_path, budgts=[]), where="cost")
    assert caught.value.param == "cost.params.budgts"
    with pytest.raises(ConfigError) as caught:
        build_component(
            spec(tmp_path, prices={"big": {"input": "lots", "output": 1}}), where="cost"
        )
    assert caught.value.param == "cost.params.prices.big.input"


budget_fields = st.fixed_dictionaries(
    {},
    optional={
        "scope": st.sampled_from(["request", "key", "user", "team", "org", "x", 3]),
        "period": st.sampled_from(["daily", "monthly", "total", "hourly", None]),
        "limit_usd": st.one_of(st.decimals(allow_nan=True), st.text(max_size=5), st.integers()),
        "limit_tokens": st.one_of(st.integers(), st.floats(), st.text(max_size=3)),
        "soft_ratio": st.one_of(st.none(), st.floats(allow_nan=True)),
        "hard": st.one_of(st.booleans(), st.text(max_size=3)),
        "downgrade_to": st.one_of(st.none(), st.text(max_size=8)),
        "id": st.one_of(st.none(), st.text(max_size=8)),
        "name": st.text(max_size=10),
    },
)


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=budget_fields)
def test_any_budget_config_is_either_valid_or_a_config_error(
    tmp_path: Path, data: dict[str, Any]
) -> None:
    try:
        engine = build_component(spec(tmp_path, budgets=[data]), where="cost")
    except ConfigError as exc:
        assert exc.param  # every rejection names where
        return
    (budget,) = engine.budgets
    assert isinstance(budget, Budget) and budget.name
    assert (budget.limit_usd is None) != (budget.limit_tokens is None)
    assert budget.limit_units >= 0


def test_budgets_load_from_yaml_in_every_accepted_shape(tmp_path: Path) -> None:
    params = {
        "budgets": [{"scope": "team", "limit_usd": "10", "period": "monthly"}],
        "ledger": {
            "type": "genai_factory.cost.ledger:SQLiteSpendLedger",
            "params": {"path": str(tmp_path / "l.sqlite3")},
        },
    }
    shapes = {
        "flat.yaml": params,
        "nested.yaml": {"cost": params},
        "spec.yaml": {"type": ENGINE, "params": params},
    }
    for name, content in shapes.items():
        path = tmp_path / name
        path.write_text(yaml.safe_dump(content))
        engine = load_budget_policy(path)
        assert [b.name for b in engine.budgets] == ["team-monthly-usd"], name
    broken = tmp_path / "broken.yaml"
    broken.write_text("budgets:\n  - {scope: team, limit_usd: -5}\n")
    with pytest.raises(ConfigError) as caught:
        load_budget_policy(broken)
    assert "budgets.0.limit_usd" in str(caught.value.param)
    with pytest.raises(ConfigError):
        load_budget_policy(tmp_path / "missing.yaml")


def test_the_example_config_is_valid() -> None:
    example = Path(__file__).parents[1] / "examples" / "budgets.yaml"
    engine = load_budget_policy(example)
    assert len(engine.budgets) == 6
    assert {b.mode for b in engine.budgets} == {"hard", "downgrade", "soft"}
    assert engine.prices.cost("unlisted-model", 10**6, 10**6) == Decimal(4)


def test_budgets_given_as_python_mappings_are_validated_too() -> None:
    with pytest.raises(ConfigError) as caught:
        BudgetPolicyEngine(budgets=[{"scope": "team", "limit_usd": "-1"}], record_spend=False)  # type: ignore[list-item]
    assert caught.value.param == "budgets.0.limit_usd"
    budget = Budget(scope="team", limit_usd=Decimal(1), soft_ratio=1.0)
    assert budget.soft_units == budget.limit_units
