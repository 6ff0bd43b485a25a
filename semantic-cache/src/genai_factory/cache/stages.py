"""Partial hits: caches for pipeline stages (embeddings, retrieval results, tool results).

A whole answer is often not reusable while its parts are: the query embedding, the chunks a
retriever found, a deterministic tool's output. Each wrapper below implements the same shared
contract as what it wraps, so it drops into a pipeline by config, and keys every result on the
same kind of scope as whole answers (tenant, namespace, plus what the stage depends on).

Example:
    >>> import asyncio
    >>> from genai_factory.cache.stages import CachedEmbedder
    >>> class Counting:
    ...     calls = 0
    ...     dimensions = 1
    ...     async def embed(self, texts):
    ...         self.calls += len(texts)
    ...         return [[float(len(t))] for t in texts]
    >>> inner = Counting()
    >>> cached = CachedEmbedder(inner, tenant="acme")
    >>> asyncio.run(cached.embed(["a", "bb"])), asyncio.run(cached.embed(["bb", "ccc"]))
    ([[1.0], [2.0]], [[2.0], [3.0]])
    >>> inner.calls   # "bb" came from the stage cache
    3
"""

from __future__ import annotations

import copy
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from genai_factory.cache.normalize import canonical_json, normalize_prompt, stable_hash
from genai_factory.shared.contracts import Embedder, Retriever, Tool
from genai_factory.shared.models import ScoredChunk

__all__ = ["CachedEmbedder", "CachedRetriever", "CachedTool", "StageCache"]


class StageCache:
    """A bounded LRU of stage results with a TTL; keys always include tenant and namespace."""

    def __init__(self, stage: str, max_entries: int = 10_000, ttl_s: float | None = 3600.0) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.stage = stage
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._items: OrderedDict[str, tuple[float | None, Any]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def key(self, tenant: str, namespace: str, payload: Any) -> str:
        return stable_hash("stage/v1", self.stage, tenant, namespace, canonical_json(payload))

    def get(self, key: str) -> Any | None:
        item = self._items.get(key)
        if item is None or (item[0] is not None and time.time() >= item[0]):
            if item is not None:
                del self._items[key]
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return copy.deepcopy(item[1])

    def put(self, key: str, value: Any) -> None:
        expires = None if self.ttl_s is None else time.time() + self.ttl_s
        self._items[key] = (expires, copy.deepcopy(value))
        self._items.move_to_end(key)
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)

    def stats(self) -> dict[str, Any]:
        total = self.hits + self.misses
        return {
            "stage": self.stage,
            "entries": len(self),
            "hits": self.hits,
            "misses": self.misses,
            "hit_rate": self.hits / total if total else 0.0,
        }


class CachedEmbedder:
    """The shared ``Embedder`` contract with a per-text cache (exact text, per model)."""

    def __init__(
        self,
        embedder: Embedder,
        tenant: str = "shared",
        namespace: str = "default",
        model_id: str = "",
        max_entries: int = 50_000,
        ttl_s: float | None = None,
    ) -> None:
        self.embedder = embedder
        self.tenant = tenant
        self.namespace = namespace
        self.model_id = model_id or type(embedder).__name__
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self.cache = StageCache("embedding", max_entries=max_entries, ttl_s=ttl_s)

    @property
    def dimensions(self) -> int:
        return self.embedder.dimensions

    async def embed(self, texts: list[str]) -> list[list[float]]:
        keys = [self.cache.key(self.tenant, self.namespace, [self.model_id, t]) for t in texts]
        found: dict[int, list[float]] = {}
        missing: list[int] = []
        for i, key in enumerate(keys):
            vector = self.cache.get(key)
            if vector is None:
                missing.append(i)
            else:
                found[i] = vector
        if missing:
            unique = list(dict.fromkeys(texts[i] for i in missing))
            fresh = dict(zip(unique, await self.embedder.embed(unique), strict=True))
            for i in missing:
                found[i] = fresh[texts[i]]
                self.cache.put(keys[i], fresh[texts[i]])
        return [found[i] for i in range(len(texts))]


class CachedRetriever:
    """The shared ``Retriever`` contract with results cached per normalised query, k and filters.

    Invalidate (``cache.clear()``) when the index behind the retriever changes; ``ttl_s``
    bounds how stale a result can get meanwhile.
    """

    def __init__(
        self,
        retriever: Retriever,
        tenant: str = "shared",
        namespace: str = "default",
        index_version: str = "",
        max_entries: int = 10_000,
        ttl_s: float | None = 600.0,
    ) -> None:
        self.retriever = retriever
        self.tenant = tenant
        self.namespace = namespace
        self.index_version = index_version
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self.cache = StageCache("retrieval", max_entries=max_entries, ttl_s=ttl_s)

    async def retrieve(
        self, query: str, k: int, filters: Mapping[str, Any] | None = None
    ) -> list[ScoredChunk]:
        payload = [self.index_version, normalize_prompt(query), k, dict(filters or {})]
        key = self.cache.key(self.tenant, self.namespace, payload)
        cached = self.cache.get(key)
        if cached is not None:
            return [ScoredChunk.model_validate(item) for item in cached]
        results = await self.retriever.retrieve(query, k, filters)
        self.cache.put(key, [r.model_dump(mode="json") for r in results])
        return results


class CachedTool:
    """The shared ``Tool`` contract with outputs cached per canonical arguments.

    Only wrap tools whose output depends on their arguments alone (a unit converter, a lookup
    in a versioned table), never ones with side effects or live data beyond ``ttl_s``.
    """

    def __init__(
        self,
        tool: Tool,
        tenant: str = "shared",
        namespace: str = "default",
        max_entries: int = 10_000,
        ttl_s: float | None = 300.0,
    ) -> None:
        self.tool = tool
        self.tenant = tenant
        self.namespace = namespace
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self.cache = StageCache(f"tool:{tool.name}", max_entries=max_entries, ttl_s=ttl_s)

    @property
    def name(self) -> str:
        return self.tool.name

    @property
    def description(self) -> str:
        return self.tool.description

    @property
    def parameters(self) -> dict[str, Any]:
        return self.tool.parameters

    async def invoke(self, arguments: Mapping[str, Any]) -> str:
        key = self.cache.key(self.tenant, self.namespace, dict(arguments))
        cached = self.cache.get(key)
        if cached is not None:
            return str(cached)
        output = await self.tool.invoke(arguments)
        self.cache.put(key, output)
        return output
