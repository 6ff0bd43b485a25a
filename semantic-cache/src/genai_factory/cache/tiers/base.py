"""The contract of a shared or persistent tier (L2, L3)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

from genai_factory.cache.entry import CacheEntry, InvalidationFilter

__all__ = ["EntryStore"]


@runtime_checkable
class EntryStore(Protocol):
    """An async key -> entry store that can be scanned (warm start) and purged by filter."""

    async def get(self, key: str) -> CacheEntry | None: ...

    async def put(self, entry: CacheEntry) -> None: ...

    async def delete(self, keys: list[str]) -> int: ...

    async def purge(self, where: InvalidationFilter) -> list[str]: ...

    def scan(self, limit: int | None = None) -> AsyncIterator[CacheEntry]: ...

    async def count(self) -> int: ...

    async def close(self) -> None: ...
