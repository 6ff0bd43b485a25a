"""L2: entries shared by every replica in Redis, plus an invalidation channel (pub/sub).

Each entry is one JSON string under ``{prefix}e:{key}`` expiring with the entry; a sorted set
``{prefix}recent`` orders keys by last write for warm starts. Replicas publish what they stored
or dropped on ``{prefix}events``; :meth:`RedisStore.listen` hands each event to a callback so
every replica's L1 and vector index follow along.

Example (needs a Redis server)::

    store = RedisStore(url="redis://127.0.0.1:6379/0", key_prefix="gf:cache:")
    await store.put(entry)
    await store.publish({"op": "delete", "keys": [entry.key]})
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis

from genai_factory.cache.entry import CacheEntry, InvalidationFilter

__all__ = ["RedisStore"]

logger = logging.getLogger("genai_factory.cache.redis")

EventHandler = Callable[[dict[str, Any]], Awaitable[None]]


class RedisStore:
    """An :class:`~genai_factory.cache.tiers.base.EntryStore` on Redis with pub/sub events."""

    def __init__(self, url: str, key_prefix: str = "gf:cache:") -> None:
        self.url = url
        self.key_prefix = key_prefix
        self._client: aioredis.Redis = aioredis.Redis.from_url(url)
        self._listener: asyncio.Task[None] | None = None

    @property
    def channel(self) -> str:
        return f"{self.key_prefix}events"

    def _entry_key(self, key: str) -> str:
        return f"{self.key_prefix}e:{key}"

    @property
    def _recent(self) -> str:
        return f"{self.key_prefix}recent"

    async def get(self, key: str) -> CacheEntry | None:
        raw = await self._client.get(self._entry_key(key))
        if raw is None:
            return None
        entry = CacheEntry.from_json(raw)
        return None if entry.expired() else entry

    async def put(self, entry: CacheEntry) -> None:
        name = self._entry_key(entry.key)
        async with self._client.pipeline(transaction=True) as pipe:
            if entry.expires_at is not None:
                ttl_ms = max(1, int((entry.expires_at - time.time()) * 1000))
                pipe.set(name, entry.to_json(), px=ttl_ms)
            else:
                pipe.set(name, entry.to_json())
            pipe.zadd(self._recent, {entry.key: entry.last_access})
            await pipe.execute()

    async def delete(self, keys: list[str]) -> int:
        if not keys:
            return 0
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.delete(*[self._entry_key(k) for k in keys])
            pipe.zrem(self._recent, *keys)
            deleted, _ = await pipe.execute()
        return int(deleted)

    async def scan(self, limit: int | None = None) -> AsyncIterator[CacheEntry]:
        """Most recently written first; expired or vanished entries are skipped (and unlisted)."""
        stop = -1 if limit is None else max(limit - 1, -1)
        if limit == 0:
            return
        raw_keys: list[Any] = await self._client.zrevrange(self._recent, 0, stop)
        keys = [k.decode() if isinstance(k, bytes) else str(k) for k in raw_keys]
        for start in range(0, len(keys), 256):
            batch = keys[start : start + 256]
            values = await self._client.mget([self._entry_key(k) for k in batch])
            gone = []
            for key, raw in zip(batch, values, strict=True):
                if raw is None:
                    gone.append(key)
                    continue
                entry = CacheEntry.from_json(raw)
                if not entry.expired():
                    yield entry
            if gone:
                await self._client.zrem(self._recent, *gone)

    async def purge(self, where: InvalidationFilter) -> list[str]:
        doomed = [entry.key async for entry in self.scan() if where.matches(entry)]
        await self.delete(doomed)
        return doomed

    async def count(self) -> int:
        return int(await self._client.zcard(self._recent))

    async def publish(self, event: dict[str, Any]) -> None:
        await self._client.publish(self.channel, json.dumps(event, separators=(",", ":")))

    async def listen(self, handler: EventHandler) -> None:
        """Start a background task that passes every event on the channel to ``handler``."""
        if self._listener is not None:
            return
        pubsub = self._client.pubsub()
        await pubsub.subscribe(self.channel)
        # the subscription is confirmed before returning, so no event published after is missed
        await pubsub.get_message(timeout=1.0)
        self._listener = asyncio.create_task(self._pump(pubsub, handler))

    async def _pump(self, pubsub: Any, handler: EventHandler) -> None:
        try:
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is None:
                    continue
                try:
                    await handler(json.loads(message["data"]))
                except Exception:  # one bad event must not stop invalidation for good
                    logger.exception("cache event handler failed")
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        await self._client.aclose()
