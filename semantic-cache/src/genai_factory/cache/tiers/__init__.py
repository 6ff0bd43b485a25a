"""Storage tiers: L1 in process (:mod:`.memory`), L2 Redis (:mod:`.redis`), L3 SQL (:mod:`.sql`)."""

from genai_factory.cache.tiers.base import EntryStore

__all__ = ["EntryStore"]
