"""Model prices in USD per million tokens, and exact Decimal arithmetic over them.

A :class:`ModelPrice` holds what one model charges for input, output and cached input tokens; a
:class:`PriceTable` maps model names to prices and turns token counts into a cost. Everything is
:class:`~decimal.Decimal`, so adding up a million calls never drifts the way floats do.

``cached_input_tokens`` follow the OpenAI usage convention: they are the part of the input tokens
that hit the provider's prompt cache, so they are billed at the cached rate instead of the input
rate, never on top of it.

Example:
    >>> from decimal import Decimal
    >>> from genai_factory.cost.prices import PriceTable
    >>> table = PriceTable({"small": {"input": "0.15", "output": "0.60", "cached_input": "0.075"}})
    >>> table.cost("small", input_tokens=1_000, output_tokens=500)
    Decimal('0.00045')
    >>> table.cost("small", input_tokens=1_000, output_tokens=0, cached_input_tokens=1_000)
    Decimal('0.000075')
    >>> usd_to_nano(Decimal("0.0000000011"))
    2
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from genai_factory.shared.errors import ConfigError, NotFound
from genai_factory.shared.factory import build_component

__all__ = [
    "NANO_PER_USD",
    "ModelPrice",
    "PriceTable",
    "as_price_table",
    "nano_to_usd",
    "usd_to_nano",
    "usd_to_nano_floor",
]

MILLION = Decimal(1_000_000)
# Shared counters (Redis, in-process) count whole nano-dollars: integers are exact and atomic.
NANO_PER_USD = Decimal(1_000_000_000)


def usd_to_nano(amount: Decimal) -> int:
    """USD to whole nano-dollars, rounded up: a counter never counts less than was spent."""
    return int((amount * NANO_PER_USD).to_integral_value(rounding=ROUND_CEILING))


def usd_to_nano_floor(amount: Decimal) -> int:
    """USD to whole nano-dollars, rounded down: a limit is never looser than configured."""
    return int((amount * NANO_PER_USD).to_integral_value(rounding=ROUND_FLOOR))


def nano_to_usd(nano: int) -> Decimal:
    """Whole nano-dollars back to USD, exactly."""
    return Decimal(nano) / NANO_PER_USD


class ModelPrice(BaseModel):
    """What a model charges, in USD per one million tokens.

    ``cached_input`` defaults to the ``input`` price (a provider without prompt caching).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: Decimal = Field(ge=0, allow_inf_nan=False, description="USD per 1M input tokens")
    output: Decimal = Field(ge=0, allow_inf_nan=False, description="USD per 1M output tokens")
    cached_input: Decimal | None = Field(
        default=None, ge=0, allow_inf_nan=False, description="USD per 1M cached input tokens"
    )

    def cost(self, input_tokens: int, output_tokens: int, cached_input_tokens: int = 0) -> Decimal:
        """The exact cost of one call; cached tokens are the cached part of ``input_tokens``."""
        if min(input_tokens, output_tokens, cached_input_tokens) < 0:
            raise ValueError("token counts must not be negative")
        cached = min(cached_input_tokens, input_tokens)
        cached_rate = self.input if self.cached_input is None else self.cached_input
        total = (
            Decimal(input_tokens - cached) * self.input
            + Decimal(cached) * cached_rate
            + Decimal(output_tokens) * self.output
        ) / MILLION
        return total if total else Decimal(0)


class PriceTable(Mapping[str, ModelPrice]):
    """Model name -> :class:`ModelPrice` (a read-only mapping); ``"*"`` prices any model not listed.

    Without a ``"*"`` entry, asking for an unlisted model raises NotFound naming it, so a budget in
    dollars is never silently enforced at a price of zero.
    """

    def __init__(self, models: Mapping[str, ModelPrice | Mapping[str, Any]] | None = None) -> None:
        if models is not None and not isinstance(models, Mapping):
            raise ConfigError("'prices' must map model names to prices", param="prices")
        self.models: dict[str, ModelPrice] = {}
        for name, price in (models or {}).items():
            self.models[str(name)] = _as_price(price, where=f"prices.{name}")

    def price(self, model: str) -> ModelPrice | None:
        """The price of ``model``, else the ``"*"`` price, else None."""
        return self.models.get(model) or self.models.get("*")

    def __getitem__(self, model: str) -> ModelPrice:
        return self.models[model]

    def __iter__(self) -> Iterator[str]:
        return iter(self.models)

    def __len__(self) -> int:
        return len(self.models)

    def cost(
        self, model: str, input_tokens: int, output_tokens: int, cached_input_tokens: int = 0
    ) -> Decimal:
        """The exact cost of a call to ``model``; NotFound when the model has no price."""
        price = self.price(model)
        if price is None:
            raise NotFound(f"no price for model '{model}' in the price table", param="model")
        return price.cost(input_tokens, output_tokens, cached_input_tokens)

    def to_params(self) -> dict[str, Any]:
        return {
            "models": {name: price.model_dump(mode="json") for name, price in self.models.items()}
        }


def as_price_table(value: PriceTable | Mapping[str, Any] | None) -> PriceTable:
    """A PriceTable from a table, a ``{type, params}`` spec or a plain ``model -> price`` mapping."""
    if value is None:
        return PriceTable()
    if isinstance(value, PriceTable):
        return value
    if isinstance(value, Mapping) and "type" in value and set(value) <= {"type", "params"}:
        return build_component(value, PriceTable, where="prices")
    return PriceTable(value)


def _as_price(value: ModelPrice | Mapping[str, Any], *, where: str) -> ModelPrice:
    if isinstance(value, ModelPrice):
        return value
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"invalid price '{where}': expected a mapping with 'input' and 'output'", param=where
        )
    try:
        return ModelPrice.model_validate(dict(value))
    except pydantic.ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = ".".join([where, *(str(p) for p in first["loc"])])
        raise ConfigError(f"invalid price '{field}': {first['msg']}", param=field) from None
