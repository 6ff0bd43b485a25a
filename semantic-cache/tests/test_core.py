"""The engine: exact then verified semantic lookup, thresholds from feedback, invalidation, drift."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from genai_factory.cache.core import SemanticCache
from genai_factory.cache.embedding import MiniLMEmbedder
from genai_factory.cache.entry import CacheEntry, CacheScope, InvalidationFilter
from genai_factory.cache.policy import AdmissionPolicy, ThresholdPolicy
from genai_factory.cache.tiers.memory import MemoryStore

from .conftest import LetterEmbedder

SCOPE = CacheScope(tenant="acme", model="smollm2")


@pytest.fixture
def cache(embedder: MiniLMEmbedder) -> SemanticCache:
    return SemanticCache(embedder=embedder, seed=1)


async def test_exact_then_semantic_then_verified_miss(cache: SemanticCache) -> None:
    await cache.store(SCOPE, "How do I enable two-factor authentication?", "A1", cost_usd=0.01)
    exact = await cache.lookup(SCOPE, "  how do I enable two-factor authentication ")
    assert exact.kind == "exact" and exact.entry is not None and exact.entry.response == "A1"
    assert exact.embed_ms == 0.0  # no embedding needed for an exact hit

    near = await cache.lookup(SCOPE, "How can I turn on two-factor authentication?")
    assert near.kind == "semantic" and near.similarity is not None and near.similarity > 0.86

    flipped = await cache.lookup(SCOPE, "How do I disable two-factor authentication?")
    assert flipped.kind == "miss"
    assert flipped.rejected and "polarity" in flipped.rejected[0][2]

    stats = cache.info()
    assert stats["exact_hits"] == 1 and stats["semantic_hits"] == 1 and stats["misses"] == 1
    assert stats["verifier_rejections"] >= 1 and stats["saved_usd"] == pytest.approx(0.02)


async def test_scopes_never_share_entries(cache: SemanticCache) -> None:
    await cache.store(SCOPE, "What is our refund policy?", "tenant acme's policy")
    for other in (
        CacheScope(tenant="globex", model="smollm2"),
        CacheScope(tenant="acme", model="other-model"),
        CacheScope(tenant="acme", model="smollm2", prompt_version="v2"),
        CacheScope(tenant="acme", model="smollm2", system_hash="pirate"),
    ):
        assert (await cache.lookup(other, "What is our refund policy?")).kind == "miss"


async def test_feedback_raises_the_entry_threshold_on_false_hits(cache: SemanticCache) -> None:
    entry = await cache.store(SCOPE, "How do I export my data?", "A")
    assert entry is not None
    base = cache.thresholds.default
    assert await cache.feedback(entry.key, correct=True, similarity=0.95)
    assert entry.threshold == pytest.approx(base - cache.thresholds.step_down)  # lowered a little
    for _ in range(100):
        await cache.feedback(entry.key, correct=True, similarity=0.95)
    assert entry.threshold == pytest.approx(base - cache.thresholds.max_drop)  # and never far

    hit = await cache.lookup(SCOPE, "How can I export my data")
    assert hit.kind == "semantic" and hit.similarity is not None
    assert await cache.feedback(entry.key, correct=False, similarity=hit.similarity)
    assert (await cache.lookup(SCOPE, "How can I export my data")).kind == "miss"
    assert entry.threshold is not None and entry.threshold > hit.similarity
    before = entry.threshold
    await cache.feedback(entry.key, correct=True, similarity=0.999)
    assert entry.threshold == before  # a confirmation never goes below the false hit + margin
    await cache.feedback(entry.key, correct=True, similarity=0.5)  # below the bar: ignored
    assert entry.threshold == before
    assert not await cache.feedback("no-such-key", correct=True)


async def test_exact_false_hit_drops_the_entry(cache: SemanticCache) -> None:
    entry = await cache.store(SCOPE, "What is 2+2?", "5")
    assert entry is not None
    await cache.feedback(entry.key, correct=False, sampled=True)
    assert (await cache.lookup(SCOPE, "What is 2+2?")).kind == "miss"
    assert cache.stats.sampled_false_hits == 1 and cache.stats.reported_false_hits == 1


async def test_ttl_expiry_and_sweep(letters: LetterEmbedder) -> None:
    cache = SemanticCache(embedder=letters, ttl_s=0.05)
    await cache.store(SCOPE, "short lived answer", "A")
    await cache.store(SCOPE, "long lived answer", "B", ttl_s=60)
    await asyncio.sleep(0.06)
    assert (await cache.lookup(SCOPE, "short lived answer")).kind == "miss"
    assert cache.sweep_expired() == 0  # the read already dropped it
    assert (await cache.lookup(SCOPE, "long lived answer")).kind == "exact"
    await cache.store(SCOPE, "another short one", "C", ttl_s=0.01)
    await asyncio.sleep(0.02)
    assert cache.sweep_expired() == 1


async def test_invalidation_by_tag_namespace_and_version(letters: LetterEmbedder) -> None:
    cache = SemanticCache(embedder=letters)
    v1 = CacheScope(tenant="t", model="m", prompt_version="v1", namespace="docs")
    v2 = CacheScope(tenant="t", model="m", prompt_version="v2", namespace="docs")
    other = CacheScope(tenant="t", model="m", namespace="faq")
    await cache.store(v1, "alpha question", "A", tags=["pricing"])
    await cache.store(v1, "beta question", "B")
    await cache.store(v2, "gamma question", "C")
    await cache.store(other, "delta question", "D", tags=["pricing"])
    assert await cache.invalidate(InvalidationFilter(tag="pricing")) == 2
    assert await cache.retire_versions(prompt_version="v2") == 1  # drops v1's "beta"
    assert (await cache.lookup(v2, "gamma question")).kind == "exact"
    assert await cache.invalidate(InvalidationFilter(namespace="docs")) == 1
    assert len(cache.l1) == 0
    with pytest.raises(ValueError, match="current model or prompt_version"):
        await cache.retire_versions()


async def test_admission_keeps_cheap_and_rare_answers_out(letters: LetterEmbedder) -> None:
    cache = SemanticCache(
        embedder=letters, admission=AdmissionPolicy(min_cost_usd=0.001, min_frequency=2)
    )
    assert await cache.store(SCOPE, "cheap question", "A", cost_usd=0.0001) is None
    assert await cache.store(SCOPE, "rare question", "A", cost_usd=0.01) is None
    await cache.lookup(SCOPE, "popular question")
    await cache.lookup(SCOPE, "popular question")
    assert await cache.store(SCOPE, "popular question", "A", cost_usd=0.01) is not None
    assert cache.stats.not_admitted == 2


async def test_eviction_removes_vectors_from_the_index(letters: LetterEmbedder) -> None:
    cache = SemanticCache(embedder=letters, l1=MemoryStore(max_entries=2))
    for text in ("first question", "second question", "third question"):
        await cache.store(SCOPE, text, text)
    assert len(cache.index) == 2 and cache.stats.evicted == 1
    assert (await cache.lookup(SCOPE, "first question")).kind == "miss"


async def test_namespace_threshold_overrides_the_global_one(embedder: MiniLMEmbedder) -> None:
    strict = SemanticCache(
        embedder=embedder, thresholds=ThresholdPolicy(default=0.8, per_namespace={"legal": 0.999})
    )
    legal = CacheScope(tenant="t", namespace="legal")
    await strict.store(legal, "Can my landlord keep the deposit?", "A")
    result = await strict.lookup(legal, "Can my landlord keep my deposit?")
    assert result.kind == "miss" and strict.stats.below_threshold >= 1
    with pytest.raises(ValueError, match="within"):
        ThresholdPolicy(default=1.5)


async def test_embedding_model_change_reembeds_or_drops(letters: LetterEmbedder) -> None:
    old = SemanticCache(embedder=letters)
    entry = await old.store(SCOPE, "what is drift", "A")
    assert entry is not None
    for policy, kept in (("reembed", True), ("drop", False)):
        cache = SemanticCache(embedder=LetterEmbedder("letters-v2"), drift_policy=policy)
        stale = CacheEntry.from_record(entry.to_record())
        cache.insert_local([stale])
        report = await cache.check_embedding_drift()
        assert (report["reembedded"] == 1) is kept and (report["dropped"] == 1) is not kept
        found = await cache.lookup(SCOPE, "what is drift")
        assert (found.kind == "exact") is kept
        if kept:
            assert found.entry is not None and found.entry.embedding_model_id == "letters-v2"


async def test_answer_drift_drops_old_entries(embedder: MiniLMEmbedder) -> None:
    cache = SemanticCache(
        embedder=embedder,
        track_answers=True,
        answer_drift_min_samples=3,
        answer_drift_rate=0.6,
    )
    prompts = [f"What is the status of ticket {i}?" for i in range(4)]
    for prompt in prompts:
        await cache.store(SCOPE, prompt, "{}", answer_text="The ticket is open and assigned.")
    # fresh answers for the same prompts now say something entirely different
    for prompt in prompts[:3]:
        await cache.store(SCOPE, prompt, "{}", answer_text="Bananas are rich in potassium.")
    assert cache.stats.drift_events == 1
    assert (await cache.lookup(SCOPE, prompts[3])).kind == "miss"


async def test_sampling_flags_hits_for_verification(letters: LetterEmbedder) -> None:
    cache = SemanticCache(embedder=letters, verify_sample_rate=1.0)
    await cache.store(SCOPE, "sampled question", "A")
    result = await cache.lookup(SCOPE, "sampled question")
    assert result.sampled and cache.stats.sampled_hits == 1
    with pytest.raises(ValueError, match="verify_sample_rate"):
        SemanticCache(verify_sample_rate=2.0)
    with pytest.raises(ValueError, match="drift_policy"):
        SemanticCache(drift_policy="ignore")  # type: ignore[arg-type]


def test_lookup_local_uses_a_precomputed_vector(letters: LetterEmbedder) -> None:
    cache = SemanticCache(embedder=letters)
    vector = letters.encode(["precomputed question"])[0]
    cache.insert_local(
        [
            CacheEntry(
                key="k", scope=SCOPE, prompt="precomputed question", response="A", vector=vector
            )
        ]
    )
    assert cache.lookup_local(SCOPE, "precomputed questions", vector).kind == "semantic"
    assert cache.lookup_local(SCOPE, "other", np.zeros(26, dtype=np.float32)).kind == "miss"
