"""L1: a bounded in-process entry map with LRU, LFU or cost-aware eviction.

``cost`` is GreedyDual-Size-Frequency: an entry's priority is the clock plus
``(hits + 1) * value / size``, where value is the money and time a hit saves; the lowest priority
leaves first and the clock rises to it, so old favourites age out. LFU breaks ties by recency.

Example:
    >>> from genai_factory.cache.entry import CacheEntry, CacheScope
    >>> from genai_factory.cache.tiers.memory import MemoryStore
    >>> store = MemoryStore(max_entries=2)
    >>> scope = CacheScope(tenant="t")
    >>> for key in ("a", "b", "c"):
    ...     evicted = store.put(CacheEntry(key=key, scope=scope, prompt=key, response="{}"))
    >>> [e.key for e in evicted], sorted(store.keys())
    (['a'], ['b', 'c'])
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections import OrderedDict
from collections.abc import Iterator
from typing import Literal

from genai_factory.cache.entry import CacheEntry

__all__ = ["EvictionPolicy", "MemoryStore"]

EvictionPolicy = Literal["lru", "lfu", "cost"]


class MemoryStore:
    """Bounded by ``max_entries`` and optionally ``max_bytes``; evicts by ``eviction``.

    ``usd_per_ms`` converts saved latency into money for the cost-aware policy.
    """

    def __init__(
        self,
        max_entries: int = 10_000,
        max_bytes: int | None = None,
        eviction: EvictionPolicy = "lru",
        usd_per_ms: float = 1e-6,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        if eviction not in ("lru", "lfu", "cost"):
            raise ValueError(f"unknown eviction policy {eviction!r}: use lru, lfu or cost")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.eviction = eviction
        self.usd_per_ms = usd_per_ms
        self._entries: OrderedDict[str, CacheEntry] = OrderedDict()
        self._priority: dict[str, float] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._sequence = itertools.count()
        self._clock = 0.0
        self._bytes = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    @property
    def bytes_used(self) -> int:
        return self._bytes

    def keys(self) -> list[str]:
        return list(self._entries)

    def values(self) -> Iterator[CacheEntry]:
        return iter(list(self._entries.values()))

    def peek(self, key: str) -> CacheEntry | None:
        return self._entries.get(key)

    def get(self, key: str) -> CacheEntry | None:
        """The entry, counted as a use (hits, recency, priority)."""
        entry = self._entries.get(key)
        if entry is not None:
            self.touch(entry)
        return entry

    def touch(self, entry: CacheEntry) -> None:
        entry.hits += 1
        entry.last_access = time.time()
        if entry.key in self._entries:
            self._entries.move_to_end(entry.key)
            self._reprioritise(entry)

    def put(self, entry: CacheEntry) -> list[CacheEntry]:
        """Insert or replace; returns what had to leave to make room."""
        old = self._entries.pop(entry.key, None)
        if old is not None:
            self._bytes -= old.size_bytes
        self._entries[entry.key] = entry
        self._bytes += entry.size_bytes
        self._reprioritise(entry)
        evicted: list[CacheEntry] = []
        while len(self._entries) > self.max_entries or (
            self.max_bytes is not None and self._bytes > self.max_bytes and len(self._entries) > 1
        ):
            victim = self._pop_victim(protect=entry.key)
            if victim is None:  # pragma: no cover - the heap always holds every live key
                break
            evicted.append(victim)
        self.evictions += len(evicted)
        return evicted

    def remove(self, key: str) -> CacheEntry | None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= entry.size_bytes
            self._priority.pop(key, None)
        return entry

    def clear(self) -> None:
        self._entries.clear()
        self._priority.clear()
        self._heap.clear()
        self._bytes = 0

    # ---------------------------------------------------------------- eviction bookkeeping

    def _value(self, entry: CacheEntry) -> float:
        return entry.cost_usd + entry.latency_ms * self.usd_per_ms

    def _reprioritise(self, entry: CacheEntry) -> None:
        if self.eviction == "lru":
            return
        if self.eviction == "lfu":
            priority = float(entry.hits) + entry.last_access * 1e-12
        else:
            priority = self._clock + (entry.hits + 1) * self._value(entry) * 1e6 / max(
                entry.size_bytes, 1
            )
        self._priority[entry.key] = priority
        heapq.heappush(self._heap, (priority, next(self._sequence), entry.key))
        if len(self._heap) > 4 * len(self._entries) + 64:
            self._heap = [
                (p, next(self._sequence), k)
                for k, p in self._priority.items()
                if k in self._entries
            ]
            heapq.heapify(self._heap)

    def _pop_victim(self, protect: str) -> CacheEntry | None:
        """The entry to evict; never ``protect`` (the newcomer has had no chance to be used)."""
        if self.eviction == "lru":
            _, entry = self._entries.popitem(last=False)
            self._bytes -= entry.size_bytes
            return entry
        held: tuple[float, int, str] | None = None
        victim: CacheEntry | None = None
        while self._heap:
            record = heapq.heappop(self._heap)
            priority, _, key = record
            if self._priority.get(key) != priority or key not in self._entries:
                continue  # stale heap record
            if key == protect and len(self._entries) > 1:
                held = record
                continue
            if self.eviction == "cost":
                self._clock = priority
            victim = self.remove(key)
            break
        if held is not None:
            heapq.heappush(self._heap, held)
        return victim
