"""The cache engine: exact then verified semantic lookup over tiered storage.

Lookup path (one scope at a time, so nothing crosses tenants):

1. exact key (scope + normalised prompt) in L1, then L2 (Redis), then L3 (SQL);
2. embed the prompt, search the scope's ANN index for a few candidates;
3. each candidate above its threshold (entry > namespace > global) goes through the
   :class:`~genai_factory.cache.verify.PairVerifier`; the first that passes is the hit.

Stores go to every tier and are announced on the Redis channel so other replicas index them.

Example (a scripted embedder; the real one is :class:`~genai_factory.cache.embedding.MiniLMEmbedder`):
    >>> import asyncio, numpy as np
    >>> from genai_factory.cache.core import SemanticCache
    >>> from genai_factory.cache.entry import CacheScope
    >>> class Letters:
    ...     model_id, dimensions = "letters", 26
    ...     def encode(self, texts):
    ...         out = np.zeros((len(texts), 26), dtype=np.float32)
    ...         for row, text in enumerate(texts):
    ...             for ch in text.lower():
    ...                 if ch.isalpha() and ch.isascii():
    ...                     out[row, ord(ch) - 97] += 1
    ...         return out / np.linalg.norm(out, axis=1, keepdims=True)
    >>> cache = SemanticCache(embedder=Letters())
    >>> scope = CacheScope(tenant="acme", model="smollm2")
    >>> async def demo():
    ...     await cache.store(scope, "How do I reset my password?", '{"answer": "..."}')
    ...     exact = await cache.lookup(scope, "how do I reset my password")
    ...     near = await cache.lookup(scope, "How do I reset my password please?")
    ...     other_tenant = await cache.lookup(CacheScope(tenant="globex", model="smollm2"),
    ...                                       "How do I reset my password?")
    ...     return exact.kind, near.kind, other_tenant.kind
    >>> asyncio.run(demo())
    ('exact', 'semantic', 'miss')
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from genai_factory.cache.embedding import TextEmbedder, Vector
from genai_factory.cache.entry import CacheEntry, CacheScope, InvalidationFilter, exact_key
from genai_factory.cache.index import ScopedIndex
from genai_factory.cache.policy import AdmissionPolicy, ThresholdPolicy
from genai_factory.cache.tiers.base import EntryStore
from genai_factory.cache.tiers.memory import MemoryStore
from genai_factory.cache.verify import PairVerifier, TextFeatures, extract_features

__all__ = ["CacheStats", "LookupResult", "SemanticCache"]

logger = logging.getLogger("genai_factory.cache")

LookupKind = Literal["exact", "semantic", "miss"]


@dataclass(slots=True)
class LookupResult:
    """What a lookup found, where, how similar, and which candidates the verifier rejected."""

    kind: LookupKind
    entry: CacheEntry | None = None
    similarity: float | None = None
    tier: str | None = None
    rejected: list[tuple[str, float, tuple[str, ...]]] = field(default_factory=list)
    sampled: bool = False
    embed_ms: float = 0.0
    lookup_ms: float = 0.0

    @property
    def hit(self) -> bool:
        return self.entry is not None


@dataclass(slots=True)
class CacheStats:
    """Counters since start; rates and savings are derived in :meth:`as_dict`."""

    lookups: int = 0
    exact_hits: int = 0
    semantic_hits: int = 0
    misses: int = 0
    verifier_rejections: int = 0
    below_threshold: int = 0
    stores: int = 0
    not_admitted: int = 0
    invalidated: int = 0
    expired: int = 0
    evicted: int = 0
    sampled_hits: int = 0
    sampled_false_hits: int = 0
    reported_false_hits: int = 0
    confirmed_hits: int = 0
    saved_usd: float = 0.0
    saved_ms: float = 0.0
    drift_events: int = 0
    reembedded: int = 0
    tier_hits: dict[str, int] = field(default_factory=lambda: {"l1": 0, "l2": 0, "l3": 0})

    def as_dict(self) -> dict[str, Any]:
        hits = self.exact_hits + self.semantic_hits
        data = dataclasses.asdict(self)
        data["hits"] = hits
        data["hit_rate"] = hits / self.lookups if self.lookups else 0.0
        data["sampled_false_hit_rate"] = (
            self.sampled_false_hits / self.sampled_hits if self.sampled_hits else None
        )
        return data


class SemanticCache:
    """Exact + verified semantic cache over L1 (memory), optional L2 (Redis) and L3 (SQL).

    - ``embedder``: any :class:`~genai_factory.cache.embedding.TextEmbedder`; None loads the
      packaged MiniLM on first use.
    - ``thresholds``, ``verifier``, ``admission``: the policies (defaults are the calibrated ones).
    - ``l1``: the bounded in-process store; the vector index covers exactly its entries.
    - ``l2``: shared store (Redis), whose pub/sub channel carries invalidations; ``l3``: persistent.
    - ``ttl_s``: default time to live (None: until evicted or invalidated).
    - ``candidates``: how many nearest neighbours the verifier may look at.
    - ``ann_threshold`` / ``large_index``: past this many vectors a scope's exact index becomes
      approximate, IVF (default) or HNSW.
    - ``verify_sample_rate``: share of hits flagged ``sampled`` for an out-of-band check.
    - ``drift_policy``: what happens to entries embedded by another model: ``reembed`` or ``drop``.
    - ``track_answers`` + ``answer_drift_*``: embed answers and, when fresh answers for cached
      prompts disagree with the cached ones too often, drop the namespace's older entries.
    """

    def __init__(
        self,
        embedder: TextEmbedder | None = None,
        thresholds: ThresholdPolicy | None = None,
        verifier: PairVerifier | None = None,
        admission: AdmissionPolicy | None = None,
        l1: MemoryStore | None = None,
        l2: EntryStore | None = None,
        l3: EntryStore | None = None,
        ttl_s: float | None = 86_400.0,
        candidates: int = 4,
        semantic: bool = True,
        ann_threshold: int = 10_000,
        large_index: Literal["ivf", "ivf_flat", "hnsw"] = "ivf",
        verify_sample_rate: float = 0.0,
        drift_policy: Literal["reembed", "drop"] = "reembed",
        track_answers: bool = False,
        answer_drift_similarity: float = 0.6,
        answer_drift_rate: float = 0.3,
        answer_drift_window: int = 50,
        answer_drift_min_samples: int = 10,
        seed: int | None = None,
    ) -> None:
        if not 0.0 <= verify_sample_rate <= 1.0:
            raise ValueError("verify_sample_rate must be within [0, 1]")
        if drift_policy not in ("reembed", "drop"):
            raise ValueError("drift_policy must be 'reembed' or 'drop'")
        self.embedder = embedder
        self.thresholds = ThresholdPolicy() if thresholds is None else thresholds
        self.verifier = PairVerifier.learned() if verifier is None else verifier
        self.admission = AdmissionPolicy() if admission is None else admission
        self.l1 = MemoryStore() if l1 is None else l1
        self.l2 = l2
        self.l3 = l3
        self.ttl_s = ttl_s
        self.candidates = candidates
        self.semantic = semantic
        self.ann_threshold = ann_threshold
        self.large_index = large_index
        self.verify_sample_rate = verify_sample_rate
        self.drift_policy = drift_policy
        self.track_answers = track_answers
        self.answer_drift_similarity = answer_drift_similarity
        self.answer_drift_rate = answer_drift_rate
        self.answer_drift_window = answer_drift_window
        self.answer_drift_min_samples = answer_drift_min_samples
        self.seed = seed
        self.node_id = uuid.uuid4().hex
        self.stats = CacheStats()
        self._index: ScopedIndex | None = None
        self._features: dict[str, TextFeatures] = {}
        self._random = random.Random(seed)  # noqa: S311 - sampling, not security
        self._answer_checks: dict[str, deque[bool]] = {}
        self._listening = False

    # ------------------------------------------------------------------ components

    def _embedder(self) -> TextEmbedder:
        if self.embedder is None:
            from genai_factory.cache.embedding import MiniLMEmbedder

            self.embedder = MiniLMEmbedder()
        return self.embedder

    @property
    def index(self) -> ScopedIndex:
        if self._index is None:
            self._index = ScopedIndex(
                dimensions=self._embedder().dimensions,
                ann_threshold=self.ann_threshold,
                large_index=self.large_index,
                vector_source=self._entry_vector,
            )
        return self._index

    def _entry_vector(self, key: str) -> Vector | None:
        entry = self.l1.peek(key)
        return None if entry is None else entry.vector

    async def embed(self, text: str) -> Vector:
        vectors = await asyncio.to_thread(self._embedder().encode, [text])
        return np.asarray(vectors[0], dtype=np.float32)

    # ------------------------------------------------------------------ lookup

    async def lookup(
        self, scope: CacheScope, prompt: str, *, vector: Vector | None = None
    ) -> LookupResult:
        """Exact, then semantic (embedding ``prompt`` unless ``vector`` is given)."""
        started = time.perf_counter()
        key = exact_key(scope, prompt)
        self.admission.observe(key)
        result = self._exact_l1(key)
        if result is None:
            result = await self._exact_shared(key)
        if result is None and self.semantic:
            embed_started = time.perf_counter()
            if vector is None:
                vector = await self.embed(prompt)
            embed_ms = (time.perf_counter() - embed_started) * 1000
            result = self.search(scope, prompt, vector)
            result.embed_ms = embed_ms
        if result is None:
            result = LookupResult(kind="miss")
        self._account(result)
        result.lookup_ms = (time.perf_counter() - started) * 1000
        return result

    def lookup_local(self, scope: CacheScope, prompt: str, vector: Vector) -> LookupResult:
        """The in-process part of a lookup (L1 exact + semantic) with a precomputed vector."""
        key = exact_key(scope, prompt)
        result = self._exact_l1(key) or self.search(scope, prompt, vector)
        self._account(result)
        return result

    def _exact_l1(self, key: str) -> LookupResult | None:
        entry = self.l1.peek(key)
        if entry is None:
            return None
        if entry.expired():
            self._drop_local(entry.key)
            self.stats.expired += 1
            return None
        self.l1.touch(entry)
        return LookupResult(kind="exact", entry=entry, similarity=1.0, tier="l1")

    async def _exact_shared(self, key: str) -> LookupResult | None:
        for name, tier in (("l2", self.l2), ("l3", self.l3)):
            if tier is None:
                continue
            try:
                entry = await tier.get(key)
            except Exception:  # a shared tier being down degrades to a miss, never an error
                logger.warning("cache tier %s unavailable on get", name, exc_info=True)
                continue
            if entry is not None and not entry.expired():
                self._admit_local(entry)
                self.l1.touch(entry)
                return LookupResult(kind="exact", entry=entry, similarity=1.0, tier=name)
        return None

    def search(self, scope: CacheScope, prompt: str, vector: Vector) -> LookupResult:
        """Semantic step: nearest candidates of this scope, threshold, then verification."""
        result = LookupResult(kind="miss")
        neighbours = self.index.search(scope.key(), vector, self.candidates)
        if not neighbours:
            return result
        query_features = extract_features(prompt)
        candidates: list[tuple[float, str, CacheEntry]] = []
        for key, approximate in neighbours:
            entry = self.l1.peek(key)
            if entry is None:  # pragma: no cover - the index follows L1 exactly
                continue
            # the large index scores 8-bit codes: thresholds compare exact float32 cosines
            exact = approximate if entry.vector is None else float(np.dot(entry.vector, vector))
            candidates.append((exact, key, entry))
        candidates.sort(key=lambda c: -c[0])
        for similarity, key, entry in candidates:
            if entry.expired():
                self._drop_local(key)
                self.stats.expired += 1
                continue
            if similarity < self.thresholds.for_entry(entry):
                self.stats.below_threshold += 1
                continue
            verdict = self.verifier.compare(query_features, self._features_of(entry), similarity)
            if not verdict.passed:
                result.rejected.append((key, similarity, verdict.reasons))
                self.stats.verifier_rejections += 1
                continue
            self.l1.touch(entry)
            result.kind = "semantic"
            result.entry = entry
            result.similarity = similarity
            result.tier = "l1"
            return result
        return result

    def _features_of(self, entry: CacheEntry) -> TextFeatures:
        features = self._features.get(entry.key)
        if features is None:
            features = extract_features(entry.prompt)
            self._features[entry.key] = features
        return features

    def _account(self, result: LookupResult) -> None:
        stats = self.stats
        stats.lookups += 1
        if result.entry is None:
            stats.misses += 1
            return
        if result.kind == "exact":
            stats.exact_hits += 1
        else:
            stats.semantic_hits += 1
        stats.tier_hits[result.tier or "l1"] = stats.tier_hits.get(result.tier or "l1", 0) + 1
        stats.saved_usd += result.entry.cost_usd
        stats.saved_ms += result.entry.latency_ms
        if self.verify_sample_rate and self._random.random() < self.verify_sample_rate:
            result.sampled = True
            stats.sampled_hits += 1

    # ------------------------------------------------------------------ store

    async def store(
        self,
        scope: CacheScope,
        prompt: str,
        response: str,
        *,
        cost_usd: float = 0.0,
        latency_ms: float = 0.0,
        tags: tuple[str, ...] | list[str] = (),
        ttl_s: float | None = None,
        vector: Vector | None = None,
        answer_text: str | None = None,
    ) -> CacheEntry | None:
        """Admit and write an answer to every tier; returns the entry, or None if not admitted."""
        key = exact_key(scope, prompt)
        admitted, reason = self.admission.admit(
            key, cost_usd=cost_usd, latency_ms=latency_ms, response_chars=len(response)
        )
        if not admitted:
            self.stats.not_admitted += 1
            logger.debug("not caching %s: %s", key[:12], reason)
            return None
        if self.semantic and vector is None:
            vector = await self.embed(prompt)
        answer_vector = None
        if self.track_answers and answer_text:
            answer_vector = await self.embed(answer_text)
            await self._check_answer_drift(key, scope, answer_vector)
        now = time.time()
        ttl = self.ttl_s if ttl_s is None else ttl_s
        entry = CacheEntry(
            key=key,
            scope=scope,
            prompt=prompt,
            response=response,
            vector=vector,
            embedding_model_id=self._embedder().model_id if vector is not None else "",
            created_at=now,
            expires_at=None if ttl is None else now + ttl,
            cost_usd=cost_usd,
            latency_ms=latency_ms,
            tags=tuple(tags),
            last_access=now,
            answer_vector=answer_vector,
        )
        self._admit_local(entry)
        await self._write_shared(entry)
        self.stats.stores += 1
        return entry

    def insert_local(self, entries: list[CacheEntry]) -> None:
        """Bulk insert precomputed entries into L1 and the index (benchmarks, warm starts)."""
        by_scope: dict[str, list[CacheEntry]] = {}
        for entry in entries:
            for evicted in self.l1.put(entry):
                self._forget(evicted)
            if entry.vector is not None:
                by_scope.setdefault(entry.scope.key(), []).append(entry)
        for scope_key, group in by_scope.items():
            live = [(e.key, e.vector) for e in group if e.key in self.l1 and e.vector is not None]
            if live:
                self.index.add_many(
                    scope_key, [k for k, _ in live], np.vstack([v for _, v in live])
                )

    def _admit_local(self, entry: CacheEntry) -> None:
        if entry.key in self.l1:
            self._drop_local(entry.key)
        for evicted in self.l1.put(entry):
            self._forget(evicted)
        if entry.vector is not None and entry.key in self.l1:
            self.index.add(entry.scope.key(), entry.key, entry.vector)

    def _forget(self, entry: CacheEntry) -> None:
        self.stats.evicted += 1
        self.index.remove(entry.scope.key(), entry.key)
        self._features.pop(entry.key, None)

    def _drop_local(self, key: str) -> CacheEntry | None:
        entry = self.l1.remove(key)
        if entry is not None:
            self.index.remove(entry.scope.key(), key)
            self._features.pop(key, None)
        return entry

    async def _write_shared(self, entry: CacheEntry) -> None:
        for name, tier in (("l2", self.l2), ("l3", self.l3)):
            if tier is None:
                continue
            try:
                await tier.put(entry)
            except Exception:
                logger.warning("cache tier %s unavailable on put", name, exc_info=True)
        await self._publish({"op": "put", "key": entry.key})

    async def _publish(self, event: dict[str, Any]) -> None:
        publish = getattr(self.l2, "publish", None)
        if publish is None:
            return
        try:
            await publish({**event, "origin": self.node_id})
        except Exception:
            logger.warning("cache event not published", exc_info=True)

    # ------------------------------------------------------------------ feedback

    async def feedback(
        self, key: str, *, correct: bool, similarity: float | None = None, sampled: bool = False
    ) -> bool:
        """Learn from a verdict on a served hit; returns False if the entry is gone."""
        entry = self.l1.peek(key)
        if entry is None:
            return False
        if sampled and not correct:
            self.stats.sampled_false_hits += 1
        if similarity is None or similarity >= 0.9999:
            # an exact hit judged wrong means the answer itself is bad: drop it everywhere
            if not correct:
                self.stats.reported_false_hits += 1
                await self.delete([key])
            else:
                self.stats.confirmed_hits += 1
            return True
        if correct:
            self.stats.confirmed_hits += 1
            self.thresholds.on_confirmed_hit(entry, similarity)
        else:
            self.stats.reported_false_hits += 1
            self.thresholds.on_false_hit(entry, similarity)
        await self._write_shared(entry)
        return True

    # ------------------------------------------------------------------ invalidation

    async def delete(self, keys: list[str]) -> int:
        removed = sum(self._drop_local(k) is not None for k in keys)
        for tier in (self.l2, self.l3):
            if tier is not None:
                removed = max(removed, await tier.delete(keys))
        await self._publish({"op": "delete", "keys": keys})
        self.stats.invalidated += removed
        return removed

    async def invalidate(self, where: InvalidationFilter) -> int:
        """Purge every entry matching ``where`` from all tiers and tell the other replicas."""
        doomed = {e.key for e in self.l1.values() if where.matches(e)}
        for key in doomed:
            self._drop_local(key)
        for tier in (self.l2, self.l3):
            if tier is not None:
                doomed.update(await tier.purge(where))
        await self._publish({"op": "purge", "where": where.as_dict()})
        self.stats.invalidated += len(doomed)
        return len(doomed)

    async def retire_versions(
        self,
        *,
        model: str | None = None,
        prompt_version: str | None = None,
        tenant: str | None = None,
    ) -> int:
        """A version bump: drop every entry not of the current ``model`` / ``prompt_version``."""
        if model is None and prompt_version is None:
            raise ValueError("name the current model or prompt_version")
        return await self.invalidate(
            InvalidationFilter(tenant=tenant, model_not=model, prompt_version_not=prompt_version)
        )

    def sweep_expired(self) -> int:
        """Drop expired entries from L1 now (reads drop them lazily anyway)."""
        now = time.time()
        expired = [e.key for e in self.l1.values() if e.expired(now)]
        for key in expired:
            self._drop_local(key)
        self.stats.expired += len(expired)
        return len(expired)

    # ------------------------------------------------------------------ drift

    async def check_embedding_drift(self) -> dict[str, int]:
        """Entries embedded by another model are re-embedded (and kept) or dropped."""
        model_id = self._embedder().model_id
        stale = [
            e for e in self.l1.values() if e.vector is not None and e.embedding_model_id != model_id
        ]
        if not stale:
            return {"reembedded": 0, "dropped": 0}
        if self.drift_policy == "drop":
            dropped = await self.invalidate(InvalidationFilter(embedding_model_id_not=model_id))
            self.stats.drift_events += 1
            return {"reembedded": 0, "dropped": dropped}
        vectors = await asyncio.to_thread(self._embedder().encode, [e.prompt for e in stale])
        for entry, vector in zip(stale, vectors, strict=True):
            entry.vector = np.asarray(vector, dtype=np.float32)
            entry.embedding_model_id = model_id
            entry.threshold = None  # a learned threshold belongs to the old vector space
            self._admit_local(entry)
            await self._write_shared(entry)
        self.stats.reembedded += len(stale)
        self.stats.drift_events += 1
        return {"reembedded": len(stale), "dropped": 0}

    async def _check_answer_drift(self, key: str, scope: CacheScope, fresh: Vector) -> None:
        previous = self.l1.peek(key)
        if previous is None or previous.answer_vector is None:
            return
        agree = float(np.dot(previous.answer_vector, fresh)) >= self.answer_drift_similarity
        window = self._answer_checks.setdefault(
            scope.namespace, deque(maxlen=self.answer_drift_window)
        )
        window.append(agree)
        disagreement = window.count(False) / len(window)
        if len(window) >= self.answer_drift_min_samples and disagreement >= self.answer_drift_rate:
            logger.warning(
                "answer drift in namespace %s (%.0f%% of fresh answers differ): dropping its entries",
                scope.namespace,
                disagreement * 100,
            )
            window.clear()
            self.stats.drift_events += 1
            await self.invalidate(
                InvalidationFilter(namespace=scope.namespace, created_before=time.time())
            )

    # ------------------------------------------------------------------ replicas and warm start

    async def warm_start(self, limit: int | None = None) -> int:
        """Fill L1 (and the index) from L2, then L3, most recently used first."""
        loaded = 0
        budget = self.l1.max_entries if limit is None else min(limit, self.l1.max_entries)
        batch: list[CacheEntry] = []
        for tier in (self.l2, self.l3):
            if tier is None:
                continue
            async for entry in tier.scan(limit=budget):
                if loaded >= budget:
                    break
                if entry.key in self.l1 or any(e.key == entry.key for e in batch):
                    continue
                batch.append(entry)
                loaded += 1
        # oldest first so the most recent end up most recently used in L1
        self.insert_local(sorted(batch, key=lambda e: e.last_access))
        await self.check_embedding_drift()
        return loaded

    async def start(self, warm: bool = True) -> None:
        """Subscribe to other replicas' events (when L2 can publish) and warm L1 up."""
        listen = getattr(self.l2, "listen", None)
        if listen is not None and not self._listening:
            await listen(self.handle_event)
            self._listening = True
        if warm:
            await self.warm_start()

    async def handle_event(self, event: dict[str, Any]) -> None:
        """Apply another replica's put/delete/purge to this replica's L1."""
        if event.get("origin") == self.node_id:
            return
        op = event.get("op")
        if op == "put" and self.l2 is not None:
            entry = await self.l2.get(str(event.get("key")))
            if entry is not None:
                self._admit_local(entry)
        elif op == "delete":
            for key in event.get("keys", []):
                self._drop_local(str(key))
        elif op == "purge":
            where = InvalidationFilter(**event.get("where", {}))
            for entry in [e for e in self.l1.values() if where.matches(e)]:
                self._drop_local(entry.key)

    async def close(self) -> None:
        for tier in (self.l2, self.l3):
            if tier is not None:
                with contextlib.suppress(Exception):
                    await tier.close()
        self._listening = False

    def info(self) -> dict[str, Any]:
        """Stats plus sizes, for the service's /stats."""
        data = self.stats.as_dict()
        data["l1_entries"] = len(self.l1)
        data["l1_bytes"] = self.l1.bytes_used
        data["indexed_vectors"] = len(self.index) if self._index is not None else 0
        data["threshold"] = self.thresholds.default
        return data
