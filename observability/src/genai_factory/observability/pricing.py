"""A versioned price table: per model, USD per 1M input, output and cached-input tokens.

The packaged ``data/prices.yaml`` carries a ``version`` and the ``date`` its prices were taken;
config overrides single models or points at another file. A dated or provider-prefixed model
name (``openai/gpt-4o-2024-08-06``) resolves to its base entry by the longest matching prefix.

Example:
    >>> from genai_factory.observability.pricing import PriceTable
    >>> table = PriceTable.load(overrides={"my-model": {"input": 1, "output": 2}})
    >>> table.cost("my-model", input_tokens=500_000, output_tokens=250_000)
    Decimal('1.000000')
    >>> table.price("openai/gpt-4o-mini-2024-07-18").output
    Decimal('0.6')
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field

from genai_factory.shared.errors import ConfigError, NotFound
from genai_factory.shared.settings import read_yaml

__all__ = ["ModelPrice", "PriceTable", "PriceTableFile"]

_PER_MILLION = Decimal(1_000_000)
_QUANTUM = Decimal("0.000001")  # a millionth of a dollar is plenty for attribution


class ModelPrice(BaseModel):
    """USD per 1M tokens. ``cached_input`` defaults to the input price when a model has no cache."""

    model_config = ConfigDict(extra="forbid")

    input: Decimal = Field(ge=0)
    output: Decimal = Field(ge=0)
    cached_input: Decimal | None = Field(default=None, ge=0)
    provider: str | None = None

    @property
    def cached(self) -> Decimal:
        return self.input if self.cached_input is None else self.cached_input


class PriceTableFile(BaseModel):
    """The YAML document: a version, the date the prices were taken, and the models."""

    model_config = ConfigDict(extra="forbid")

    version: str = Field(min_length=1)
    date: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$")
    currency: str = "USD"
    models: dict[str, ModelPrice]


@dataclass(frozen=True, slots=True)
class _Resolved:
    name: str
    price: ModelPrice


class PriceTable:
    """Looks up prices and turns token counts into a cost (a ``Decimal`` in USD)."""

    def __init__(self, table: PriceTableFile) -> None:
        self.table = table
        # Longest names first, so "gpt-4o-mini-..." matches gpt-4o-mini before gpt-4o.
        self._by_length = sorted(table.models, key=len, reverse=True)
        self._cache: dict[str, _Resolved | None] = {}
        self._floats: dict[str, tuple[float, float, float] | None] = {}

    def to_params(self) -> dict[str, Any]:
        return {"table": self.table.model_dump(mode="json")}

    @property
    def version(self) -> str:
        return self.table.version

    @property
    def date(self) -> str:
        return self.table.date

    @classmethod
    def load(
        cls,
        path: str | Path | None = None,
        overrides: Mapping[str, Mapping[str, Any] | ModelPrice] | None = None,
        version: str | None = None,
    ) -> PriceTable:
        """The packaged table (or ``path``) with ``overrides`` merged over it.

        Overriding changes the version to ``<base>+local`` unless ``version`` is given, so a
        report always says which prices it used.
        """
        if path is None:
            text = (
                resources.files("genai_factory.observability")
                .joinpath("data/prices.yaml")
                .read_text("utf-8")
            )
            data: Any = yaml.safe_load(text)
            where = "packaged prices.yaml"
        else:
            data = read_yaml(Path(path))
            where = str(path)
        try:
            table = PriceTableFile.model_validate(data)
            if overrides:
                models = dict(table.models)
                for name, price in overrides.items():
                    models[name] = ModelPrice.model_validate(price)
                table = table.model_copy(
                    update={"models": models, "version": version or f"{table.version}+local"}
                )
        except pydantic.ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            field = ".".join(str(part) for part in first["loc"])
            raise ConfigError(
                f"{where}: invalid price '{field}': {first['msg']}", param=field
            ) from None
        return cls(table)

    def _resolve(self, model: str) -> _Resolved | None:
        if model in self._cache:
            return self._cache[model]
        name = model.rsplit("/", 1)[-1].lower()
        found: _Resolved | None = None
        if name in self.table.models:
            found = _Resolved(name, self.table.models[name])
        else:
            for candidate in self._by_length:
                if name.startswith(candidate) and name[len(candidate) : len(candidate) + 1] in {
                    "-",
                    "@",
                    ":",
                    ".",
                }:
                    found = _Resolved(candidate, self.table.models[candidate])
                    break
        if len(self._cache) < 4096:  # bounded: model names come from requests
            self._cache[model] = found
        return found

    def knows(self, model: str) -> bool:
        return self._resolve(model) is not None

    def price(self, model: str) -> ModelPrice:
        """The price entry for ``model``; NotFound if the table has none."""
        resolved = self._resolve(model)
        if resolved is None:
            raise NotFound(
                f"no price for model '{model}' in price table {self.version}", param="model"
            )
        return resolved.price

    def cost(
        self,
        model: str,
        *,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cached_input_tokens: int = 0,
    ) -> Decimal:
        """USD for one call. ``input_tokens`` includes the cached ones (as OpenAI reports usage)."""
        price = self.price(model)
        cached = min(max(cached_input_tokens, 0), max(input_tokens, 0))
        fresh = max(input_tokens, 0) - cached
        total = (
            Decimal(fresh) * price.input
            + Decimal(cached) * price.cached
            + Decimal(max(output_tokens, 0)) * price.output
        ) / _PER_MILLION
        return total.quantize(_QUANTUM)

    def cost_float(
        self,
        model: str,
        *,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cached_input_tokens: int = 0,
    ) -> float | None:
        """The same cost as a float, or None for an unknown model: for spans and metrics.

        >>> PriceTable.load().cost_float("gpt-4o-mini", input_tokens=1_000_000)
        0.15
        """
        prices = self._floats.get(model)
        if prices is None:
            if model in self._floats:
                return None
            resolved = self._resolve(model)
            if resolved is not None:
                price = resolved.price
                prices = (float(price.input), float(price.cached), float(price.output))
            if len(self._floats) < 4096:
                self._floats[model] = prices
            if prices is None:
                return None
        cached = min(max(cached_input_tokens, 0), max(input_tokens, 0))
        fresh = max(input_tokens, 0) - cached
        total = fresh * prices[0] + cached * prices[1] + max(output_tokens, 0) * prices[2]
        return round(total / 1_000_000, 9)
