"""The HTTP service: lookup/store/invalidate/feedback/stats, keys bound to tenants, 4xx not 5xx."""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from genai_factory.cache.core import SemanticCache
from genai_factory.cache.embedding import MiniLMEmbedder
from genai_factory.cache.entry import CacheEntry, CacheScope
from genai_factory.cache.service import create_app
from genai_factory.cache.tiers.sql import SQLiteStore

from .conftest import LetterEmbedder

ACME = {"authorization": "Bearer key-acme"}
GLOBEX = {"authorization": "Bearer key-globex"}
ADMIN = {"authorization": "Bearer root-key"}


def client_for(cache: SemanticCache, **auth: object) -> httpx.AsyncClient:
    app = create_app(cache, **auth)  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://cache")


@pytest.fixture
def keyed(embedder: MiniLMEmbedder) -> httpx.AsyncClient:
    return client_for(
        SemanticCache(embedder=embedder),
        tenant_keys={"key-acme": "acme", "key-globex": "globex"},
        admin_key="root-key",
    )


async def test_store_lookup_feedback_invalidate_stats(keyed: httpx.AsyncClient) -> None:
    async with keyed as client:
        body = {"tenant": "acme", "model": "m", "prompt": "How do I rotate my API key?"}
        stored = await client.post(
            "/v1/cache/store",
            json={**body, "response": "Go to settings.", "cost_usd": 0.002},
            headers=ACME,
        )
        assert stored.status_code == 200 and stored.json()["stored"]
        near = await client.post(
            "/v1/cache/lookup", json={**body, "prompt": "How can I rotate my API key"}, headers=ACME
        )
        data = near.json()
        assert data["hit"] and data["kind"] == "semantic" and data["response"] == "Go to settings."
        flipped = await client.post(
            "/v1/cache/lookup", json={**body, "prompt": "How do I revoke my API key?"}, headers=ACME
        )
        assert not flipped.json()["hit"]

        feedback = await client.post(
            "/v1/cache/feedback",
            json={
                "tenant": "acme",
                "key": data["key"],
                "correct": False,
                "similarity": data["similarity"],
            },
            headers=ACME,
        )
        assert feedback.status_code == 200 and feedback.json()["threshold"] > data["similarity"]
        again = await client.post(
            "/v1/cache/lookup", json={**body, "prompt": "How can I rotate my API key"}, headers=ACME
        )
        assert not again.json()["hit"]

        stats = await client.get("/v1/cache/stats", headers=ADMIN)
        assert stats.json()["semantic_hits"] == 1 and stats.json()["reported_false_hits"] == 1
        purge = await client.post("/v1/cache/invalidate", json={"tenant": "acme"}, headers=ACME)
        assert purge.json() == {"invalidated": 1}
        assert (await client.get("/healthz")).json() == {"status": "ok"}


async def test_keys_are_bound_to_their_tenant(keyed: httpx.AsyncClient) -> None:
    async with keyed as client:
        body = {"tenant": "acme", "prompt": "What is the vault code?", "response": "1234"}
        assert (await client.post("/v1/cache/store", json=body, headers=ACME)).status_code == 200
        query = {"tenant": "acme", "prompt": "What is the vault code?"}
        stolen = await client.post("/v1/cache/lookup", json=query, headers=GLOBEX)
        assert stolen.status_code == 403
        assert stolen.json()["error"]["type"] == "permission_error"
        own = await client.post(
            "/v1/cache/lookup",
            json={"tenant": "globex", "prompt": "What is the vault code?"},
            headers=GLOBEX,
        )
        assert own.status_code == 200 and not own.json()["hit"]
        assert (await client.post("/v1/cache/lookup", json=query)).status_code == 401
        bad_key = {"authorization": "Bearer nope"}
        assert (
            await client.post("/v1/cache/lookup", json=query, headers=bad_key)
        ).status_code == 401
        assert (await client.get("/v1/cache/stats", headers=ACME)).status_code == 403
        cross = await client.post("/v1/cache/invalidate", json={"tag": "x"}, headers=GLOBEX)
        assert cross.status_code == 403
        other = await client.post("/v1/cache/invalidate", json={"tenant": "acme"}, headers=GLOBEX)
        assert other.status_code == 403
        lookup = await client.post(
            "/v1/cache/lookup",
            json={"tenant": "acme", "prompt": "What is the vault code?"},
            headers=ACME,
        )
        key = lookup.json()["key"]
        foreign = await client.post(
            "/v1/cache/feedback",
            json={"tenant": "globex", "key": key, "correct": False},
            headers=GLOBEX,
        )
        assert foreign.status_code == 404


async def test_bad_input_is_a_4xx_with_an_openai_error(keyed: httpx.AsyncClient) -> None:
    async with keyed as client:
        cases = [
            ("/v1/cache/lookup", {"tenant": "acme"}),
            ("/v1/cache/lookup", {"tenant": "acme", "prompt": ""}),
            ("/v1/cache/store", {"tenant": "acme", "prompt": "p", "response": "r", "cost_usd": -1}),
            ("/v1/cache/invalidate", {}),
            ("/v1/cache/lookup", {"tenant": "acme", "prompt": "p", "surprise": 1}),
        ]
        for path, body in cases:
            response = await client.post(path, json=body, headers=ADMIN)
            assert response.status_code == 400, (path, body, response.text)
            assert response.json()["error"]["type"] == "invalid_request_error"
        assert (await client.get("/nowhere")).status_code == 404
        wrong = await client.get("/v1/cache/lookup")
        assert wrong.status_code == 405 and "error" in wrong.json()


SCHEMA_APP = create_app(SemanticCache(embedder=LetterEmbedder()))
schema = schemathesis.openapi.from_asgi("/openapi.json", SCHEMA_APP)


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_makes_the_service_fail(case: schemathesis.Case) -> None:
    response = case.call()
    assert response.status_code < 500, response.text


async def test_the_app_starts_and_closes_the_cache_with_its_lifespan() -> None:
    store = SQLiteStore(path=":memory:")
    cache = SemanticCache(embedder=LetterEmbedder(), l3=store)
    warm = CacheEntry(
        key="k" * 64, scope=CacheScope(tenant="acme"), prompt="warm question", response="warm"
    )
    await store.put(warm)
    app = create_app(cache, start_cache=True)
    async with app.router.lifespan_context(app):
        assert len(cache.l1) == 1  # warmed from L3 on start
