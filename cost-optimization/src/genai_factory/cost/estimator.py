"""Estimate what a chat request will cost before it runs, for the budget reservation.

Prompt tokens come from a tokenizer callable when one is configured (an import path such as
``"mypkg.tokens:count"``, a function ``str -> int``), else from the character count
(``chars_per_token``, 4 for English text). Output tokens are the request's own cap
(``max_completion_tokens`` or ``max_tokens``) times ``n``, or ``default_max_tokens`` when the request
sets none. The reservation then holds the worst case, and settlement adjusts it to the truth.

Example:
    >>> from genai_factory.cost.estimator import CostEstimator
    >>> from genai_factory.shared.models import ChatCompletionRequest
    >>> estimator = CostEstimator({"small": {"input": "1", "output": "2"}})
    >>> request = ChatCompletionRequest(
    ...     model="small", max_tokens=100, messages=[{"role": "user", "content": "x" * 400}])
    >>> estimate = estimator.estimate(request)
    >>> estimate.prompt_tokens, estimate.output_tokens, estimate.usd
    (104, 100, Decimal('0.000304'))
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from genai_factory.cost.prices import ModelPrice, as_price_table
from genai_factory.shared.errors import ConfigError
from genai_factory.shared.factory import import_object
from genai_factory.shared.models import ChatCompletionRequest

__all__ = ["CostEstimate", "CostEstimator"]


@dataclass(frozen=True, slots=True)
class CostEstimate:
    """The worst case of one request: tokens in, tokens out at most, and their price (0 if unknown)."""

    model: str
    prompt_tokens: int
    output_tokens: int
    usd: Decimal
    priced: bool

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.output_tokens


class CostEstimator:
    """Prompt and output tokens of a request, and their cost from a :class:`PriceTable`."""

    def __init__(
        self,
        prices: Mapping[str, ModelPrice] | None = None,
        chars_per_token: float = 4.0,
        tokenizer: str | None = None,
        default_max_tokens: int = 256,
        per_message_tokens: int = 4,
    ) -> None:
        if not (isinstance(chars_per_token, int | float) and 0 < chars_per_token < math.inf):
            raise ConfigError(
                "'chars_per_token' must be a positive number", param="chars_per_token"
            )
        if default_max_tokens < 1:
            raise ConfigError("'default_max_tokens' must be at least 1", param="default_max_tokens")
        if per_message_tokens < 0:
            raise ConfigError(
                "'per_message_tokens' must not be negative", param="per_message_tokens"
            )
        self.prices = as_price_table(prices)
        self.chars_per_token = float(chars_per_token)
        self.tokenizer = tokenizer
        self.default_max_tokens = default_max_tokens
        self.per_message_tokens = per_message_tokens
        self._count: Callable[[str], int] | None = None
        if tokenizer is not None:
            counter = import_object(tokenizer, where="tokenizer")
            if not callable(counter):
                raise ConfigError(f"'tokenizer': {tokenizer} is not callable", param="tokenizer")
            self._count = counter

    def count_tokens(self, text: str) -> int:
        """Tokens in ``text``: the tokenizer's count, else characters / ``chars_per_token``."""
        if self._count is not None:
            return max(0, int(self._count(text)))
        return math.ceil(len(text) / self.chars_per_token)

    def prompt_text(self, request: ChatCompletionRequest) -> str:
        """Everything of the request a model reads as prompt: messages and tool definitions."""
        parts = [message.text() for message in request.messages]
        for message in request.messages:
            for call in message.tool_calls or []:
                parts.append(call.function.name + call.function.arguments)
        if request.tools:
            tools: list[Any] = [tool.model_dump(mode="json") for tool in request.tools]
            parts.append(json.dumps(tools, separators=(",", ":")))
        return "\n".join(parts)

    def estimate(self, request: ChatCompletionRequest, model: str | None = None) -> CostEstimate:
        """The worst-case cost of ``request`` if sent to ``model`` (default: the request's)."""
        name = model or request.model
        prompt = self.count_tokens(self.prompt_text(request))
        prompt += self.per_message_tokens * len(request.messages)
        output = (request.output_limit or self.default_max_tokens) * request.n
        price = self.prices.price(name)
        usd = Decimal(0) if price is None else price.cost(prompt, output)
        return CostEstimate(name, prompt, output, usd, price is not None)
