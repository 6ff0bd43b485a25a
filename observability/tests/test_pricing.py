"""The versioned price table: packaged YAML, overrides, prefix resolution, exact Decimal cost."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from genai_factory.observability.pricing import PriceTable
from genai_factory.observability.setup import PriceConfig
from genai_factory.shared.errors import ConfigError, NotFound

pytestmark = pytest.mark.unit

PACKAGED = PriceTable.load()


def test_the_packaged_table_has_a_version_a_date_and_the_local_model() -> None:
    table = PriceTable.load()
    assert table.version == "2025.06.1" and table.date == "2025-06-01"
    assert table.price("smollm2").output == 0
    assert table.cost("gpt-4o", input_tokens=1_000_000, output_tokens=1_000_000) == Decimal(
        "12.500000"
    )


def test_cached_input_is_priced_separately_and_capped_by_the_input() -> None:
    table = PriceTable.load()
    # 1M input of which 400k cached: 600k * 2.50 + 400k * 1.25 per 1M
    assert table.cost("gpt-4o", input_tokens=1_000_000, cached_input_tokens=400_000) == Decimal(
        "2.000000"
    )
    assert table.cost("gpt-4o", input_tokens=10, cached_input_tokens=99) == table.cost(
        "gpt-4o", input_tokens=10, cached_input_tokens=10
    )


def test_dated_and_prefixed_names_resolve_to_the_longest_base_entry() -> None:
    table = PriceTable.load()
    assert table.price("openai/gpt-4o-mini-2024-07-18") == table.price("gpt-4o-mini")
    assert table.price("gpt-4o-2024-08-06") == table.price("gpt-4o")
    assert not table.knows("gpt-4oo")  # no separator after the base name: not a variant
    with pytest.raises(NotFound, match="no price for model 'mystery'"):
        table.price("mystery")


def test_overrides_and_files_change_the_version(tmp_path: Path) -> None:
    table = PriceTable.load(overrides={"gpt-4o": {"input": 1, "output": 1}})
    assert table.version == "2025.06.1+local"
    assert table.cost("gpt-4o", input_tokens=500_000, output_tokens=500_000) == Decimal("1.000000")
    path = tmp_path / "prices.yaml"
    path.write_text("version: '9'\ndate: '2030-01-01'\nmodels:\n  m: {input: 2, output: 4}\n")
    config = PriceConfig(path=path, models={"n": {"input": 1, "output": 1}}, version="9-ours")
    table = config.load()
    assert table.version == "9-ours" and table.knows("m") and table.knows("n")
    assert table.to_params()["table"]["date"] == "2030-01-01"


def test_a_bad_price_file_names_the_field(tmp_path: Path) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text("version: '1'\ndate: '2030-01-01'\nmodels:\n  m: {input: -1, output: 4}\n")
    with pytest.raises(ConfigError, match=r"models\.m\.input"):
        PriceTable.load(path)
    with pytest.raises(ConfigError, match="not found"):
        PriceTable.load(tmp_path / "missing.yaml")


@given(
    st.integers(0, 10**9),
    st.integers(0, 10**9),
    st.integers(0, 10**9),
    st.sampled_from(["gpt-4o", "claude-sonnet-4", "smollm2", "text-embedding-3-small"]),
)
def test_cost_is_never_negative_and_grows_with_tokens(
    inp: int, out: int, cached: int, model: str
) -> None:
    table = PriceTable.load()
    cost = table.cost(model, input_tokens=inp, output_tokens=out, cached_input_tokens=cached)
    assert cost >= 0
    assert (
        table.cost(model, input_tokens=inp + 1000, output_tokens=out, cached_input_tokens=cached)
        >= cost
    )
