"""Partial hits: embedding, retrieval and tool stage caches, scoped like whole answers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import pytest

from genai_factory.cache.embedding import MiniLMEmbedder
from genai_factory.cache.stages import CachedEmbedder, CachedRetriever, CachedTool, StageCache
from genai_factory.shared.contracts import Embedder, Retriever, Tool
from genai_factory.shared.models import Chunk, ScoredChunk


async def test_embedding_stage_with_the_real_model(embedder: MiniLMEmbedder) -> None:
    cached = CachedEmbedder(embedder, tenant="acme", model_id=embedder.model_id)
    assert isinstance(cached, Embedder) and cached.dimensions == 384
    first = await cached.embed(["refund policy", "shipping times"])
    second = await cached.embed(["shipping times", "refund policy", "refund policy"])
    assert second[0] == first[1] and second[1] == first[0]
    assert cached.cache.stats()["hits"] == 3 and cached.cache.stats()["misses"] == 2


class Shelf:
    def __init__(self) -> None:
        self.calls = 0

    async def retrieve(
        self, query: str, k: int, filters: Mapping[str, Any] | None = None
    ) -> list[ScoredChunk]:
        self.calls += 1
        chunk = Chunk(document_id="doc", text=f"about {query}")
        return [ScoredChunk(chunk=chunk, score=0.5)][:k]


async def test_retrieval_stage_keys_on_tenant_query_k_and_filters() -> None:
    shelf = Shelf()
    acme = CachedRetriever(shelf, tenant="acme")
    assert isinstance(acme, Retriever)
    first = await acme.retrieve("Refund policy", 3)
    again = await acme.retrieve("refund policy ", 3)
    assert again == first and shelf.calls == 1
    await acme.retrieve("refund policy", 5)
    await acme.retrieve("refund policy", 3, {"lang": "de"})
    assert shelf.calls == 3
    globex = CachedRetriever(shelf, tenant="globex")
    globex.cache = acme.cache  # even sharing one store, tenants never share results
    await globex.retrieve("Refund policy", 3)
    assert shelf.calls == 4


class Converter:
    name = "km_to_miles"
    description = "convert kilometres to miles"
    parameters: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {"km": {"type": "number"}},
    }

    def __init__(self) -> None:
        self.calls = 0

    async def invoke(self, arguments: Mapping[str, Any]) -> str:
        self.calls += 1
        return f"{float(arguments['km']) * 0.621371:.3f}"


async def test_tool_stage_caches_by_arguments() -> None:
    tool = Converter()
    cached = CachedTool(tool, tenant="acme")
    assert isinstance(cached, Tool)
    assert cached.name == "km_to_miles" and cached.parameters["type"] == "object"
    assert "kilometres" in cached.description
    assert await cached.invoke({"km": 10}) == await cached.invoke({"km": 10}) == "6.214"
    await cached.invoke({"km": 11})
    assert tool.calls == 2


def test_stage_cache_bounds_expires_and_copies() -> None:
    stage = StageCache("x", max_entries=2, ttl_s=None)
    for i in range(3):
        stage.put(str(i), {"v": [i]})
    assert len(stage) == 2 and stage.get("0") is None
    value = stage.get("2")
    assert value == {"v": [2]}
    value["v"].append(99)  # a caller mutating its copy does not change the cache
    assert stage.get("2") == {"v": [2]}
    expiring = StageCache("y", ttl_s=-1)
    expiring.put("k", 1)
    assert expiring.get("k") is None and len(expiring) == 0
    stage.clear()
    assert len(stage) == 0
    with pytest.raises(ValueError, match="max_entries"):
        StageCache("z", max_entries=0)
