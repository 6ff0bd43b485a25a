"""Price arithmetic (exact Decimal) and the reservation estimator."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from genai_factory.cost.estimator import CostEstimator
from genai_factory.cost.prices import (
    ModelPrice,
    PriceTable,
    as_price_table,
    nano_to_usd,
    usd_to_nano,
    usd_to_nano_floor,
)
from genai_factory.shared.errors import ConfigError, NotFound
from genai_factory.shared.factory import build_component, dump_component
from genai_factory.shared.models import ChatCompletionRequest

rates = st.decimals(min_value=0, max_value=1000, places=6)
counts = st.integers(min_value=0, max_value=10**9)


@given(rate_in=rates, rate_out=rates, rate_cached=rates, n_in=counts, n_out=counts, cached=counts)
def test_cost_is_exactly_the_per_million_formula(
    rate_in: Decimal, rate_out: Decimal, rate_cached: Decimal, n_in: int, n_out: int, cached: int
) -> None:
    price = ModelPrice(input=rate_in, output=rate_out, cached_input=rate_cached)
    cost = price.cost(n_in, n_out, cached)
    billed_cached = min(cached, n_in)
    expected = (
        (n_in - billed_cached) * rate_in + billed_cached * rate_cached + n_out * rate_out
    ) / Decimal(10**6)
    assert cost == expected and cost >= 0


@given(rate_in=rates, rate_out=rates, a=counts, b=counts, c=counts, d=counts)
def test_cost_adds_up_over_calls_without_drift(
    rate_in: Decimal, rate_out: Decimal, a: int, b: int, c: int, d: int
) -> None:
    price = ModelPrice(input=rate_in, output=rate_out)
    assert price.cost(a, b) + price.cost(c, d) == price.cost(a + c, b + d)
    assert price.cost(a, b) <= price.cost(a + c, b + d)  # more tokens never cost less


@given(amount=st.decimals(min_value=0, max_value=10**6, places=12))
def test_nano_rounding_brackets_the_amount(amount: Decimal) -> None:
    up, down = usd_to_nano(amount), usd_to_nano_floor(amount)
    assert nano_to_usd(down) <= amount <= nano_to_usd(up)
    assert up - down in (0, 1)


def test_price_table_lookup_default_and_errors() -> None:
    table = PriceTable({"a": {"input": "1", "output": "2"}})
    assert table.cost("a", 10**6, 10**6) == Decimal(3)
    assert "a" in table and "b" not in table and 3 not in table
    with pytest.raises(NotFound, match="'b'"):
        table.cost("b", 1, 1)
    with_default = PriceTable({"*": {"input": "0.5", "output": "0.5"}})
    assert with_default.cost("anything", 10**6, 0) == Decimal("0.5")
    with pytest.raises(ConfigError) as caught:
        PriceTable({"a": {"input": "-1", "output": "2"}})
    assert caught.value.param == "prices.a.input"
    with pytest.raises(ConfigError) as caught:
        PriceTable({"a": {"input": "1", "output": "2", "typo": 1}})
    assert caught.value.param == "prices.a.typo"
    with pytest.raises(ConfigError):
        PriceTable(["a"])  # type: ignore[arg-type]
    with pytest.raises(ConfigError) as caught:
        PriceTable({"a": 5})  # type: ignore[dict-item]
    assert caught.value.param == "prices.a"
    assert len(table) == 1 and list(table) == ["a"] and table["a"].input == 1
    with pytest.raises(ValueError, match="negative"):
        ModelPrice(input=Decimal(1), output=Decimal(1)).cost(-1, 0)
    # no cached price: cached tokens bill at the input rate
    assert ModelPrice(input=Decimal(4), output=Decimal(0)).cost(10**6, 0, 10**6) == Decimal(4)


def test_price_tables_round_trip_through_config() -> None:
    table = as_price_table({"a": {"input": "1.25", "output": "2", "cached_input": "0.5"}})
    spec = dump_component(table)
    rebuilt = build_component(spec)
    assert rebuilt.models == table.models
    assert as_price_table(spec).models == table.models
    assert as_price_table(table) is table
    assert as_price_table(None).models == {}


def _request(**fields: object) -> ChatCompletionRequest:
    data: dict[str, object] = {"model": "a", "messages": [{"role": "user", "content": "x" * 40}]}
    data.update(fields)
    return ChatCompletionRequest.model_validate(data)


def test_estimator_counts_characters_messages_tools_and_output_cap() -> None:
    estimator = CostEstimator(PriceTable({"a": {"input": "1", "output": "1"}}), chars_per_token=4)
    base = estimator.estimate(_request(max_tokens=10))
    assert (base.prompt_tokens, base.output_tokens, base.total_tokens) == (14, 10, 24)
    assert base.priced and base.usd == Decimal(24) / 10**6
    # n completions, max_completion_tokens wins over max_tokens, default when unset
    assert estimator.estimate(_request(max_tokens=10, n=3)).output_tokens == 30
    assert estimator.estimate(_request(max_tokens=10, max_completion_tokens=5)).output_tokens == 5
    assert estimator.estimate(_request()).output_tokens == 256
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    assert estimator.estimate(_request(tools=[tool])).prompt_tokens > base.prompt_tokens
    unpriced = estimator.estimate(_request(max_tokens=10), model="unknown")
    assert not unpriced.priced and unpriced.usd == 0 and unpriced.model == "unknown"


def test_estimator_with_a_tokenizer_from_an_import_path() -> None:
    # builtins.len stands in for a real tokenizer: one token per character
    estimator = CostEstimator(tokenizer="builtins:len", per_message_tokens=0)
    request = _request(messages=[{"role": "user", "content": "one two"}], max_tokens=1)
    assert estimator.estimate(request).prompt_tokens == 7
    assistant_call = {
        "role": "assistant",
        "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": "{} {}"}}],
    }
    tool_reply = {"role": "tool", "tool_call_id": "c1", "content": "done"}
    longer = _request(messages=[{"role": "user", "content": "hi"}, assistant_call, tool_reply])
    # "hi" + "" (the assistant's content) + "f{} {}" + "done", joined by newlines
    assert estimator.estimate(longer).prompt_tokens == len("hi\n\ndone\nf{} {}")


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"chars_per_token": 0}, "chars_per_token"),
        ({"default_max_tokens": 0}, "default_max_tokens"),
        ({"per_message_tokens": -1}, "per_message_tokens"),
        ({"tokenizer": "decimal:MAX_PREC"}, "tokenizer"),
        ({"tokenizer": "no.such.module:count"}, "tokenizer"),
    ],
)
def test_estimator_config_errors_name_the_field(params: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        CostEstimator(**params)  # type: ignore[arg-type]
    assert caught.value.param == field
