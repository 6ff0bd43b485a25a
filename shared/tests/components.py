"""Small real components the factory tests build (importable by path, as config would name them)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from genai_factory.shared.models import ChatCompletionRequest, Principal, Verdict


class KeywordGuard:
    """Blocks input that contains any of ``words``."""

    def __init__(
        self, words: list[str], mode: Literal["block", "redact"] = "block", threshold: float = 0.5
    ) -> None:
        self.words = words
        self.mode = mode
        self.threshold = threshold

    async def check_input(
        self, request: ChatCompletionRequest, principal: Principal | None
    ) -> Verdict:
        text = " ".join(m.text() for m in request.messages).lower()
        hit = any(word in text for word in self.words)
        return Verdict(decision=self.mode if hit else "allow")

    async def check_output(
        self, text: str, request: ChatCompletionRequest, principal: Principal | None
    ) -> Verdict:
        return Verdict(decision="allow")


class Chain:
    """Holds nested components: a primary guard, a list of others, and raw options."""

    def __init__(
        self,
        primary: KeywordGuard,
        others: list[Any] | None = None,
        options: dict[str, Any] | None = None,
        store: Path = Path("x.db"),
    ) -> None:
        self._primary = primary
        self._others = others or []
        self._options = options or {}
        self._store = store

    @property
    def primary(self) -> KeywordGuard:
        return self._primary

    @property
    def others(self) -> list[Any]:
        return self._others

    @property
    def options(self) -> dict[str, Any]:
        return self._options

    @property
    def store(self) -> Path:
        return self._store


class WithKwargs:
    def __init__(self, name: str, **extra: Any) -> None:
        self.name = name
        self.extra = extra

    def to_params(self) -> Mapping[str, Any]:
        return {"name": self.name, **self.extra}


class Forgetful:
    """Keeps nothing it was built with, so it cannot be dumped."""

    def __init__(self, size: int) -> None:
        self.capacity = size


class Exploding:
    def __init__(self, size: int) -> None:
        if size > 10:
            raise ValueError("size must be at most 10")
        self.size = size


NOT_CALLABLE = 42


def guard_pair(first: KeywordGuard, second: KeywordGuard, weight: float = 1.0) -> Chain:
    """A factory function (not a class) that takes components: the config builds them first."""
    return Chain(first, [second], {"weight": weight})
