"""Redis-backed rate limiters for gateway replicas: the same algorithms as atomic Lua scripts.

Each ``acquire`` is one ``EVALSHA``: the script reads the counter, decides and writes in one
atomic step using Redis's own clock, so N gateway processes sharing one Redis admit exactly the
limit between them. Keys carry ``key_prefix`` (tenant-safe, and tests use a unique one).

Example (needs a Redis server)::

    limiter = RedisSlidingWindowLimiter("redis://127.0.0.1:6379/0", limit=100, window_s=60)
    decision = await limiter.acquire("key:alice:requests")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from genai_factory.shared.contracts import RateDecision

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

__all__ = ["RedisSlidingWindowLimiter", "RedisTokenBucketLimiter"]

_BUCKET_SCRIPT = """
local limit = tonumber(ARGV[1])
local period_ms = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil then tokens = limit; ts = now end
local rate = limit / period_ms
tokens = math.min(limit, tokens + math.max(0, now - ts) * rate)
local allowed = 0
local retry = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  retry = (cost - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(period_ms * 2))
return {allowed, tostring(tokens), tostring((limit - tokens) / rate), tostring(retry)}
"""

_WINDOW_SCRIPT = """
local limit = tonumber(ARGV[1])
local window_ms = tonumber(ARGV[2])
local slots = tonumber(ARGV[3])
local cost = tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local slot_ms = window_ms / slots
local current = math.floor(now / slot_ms)
local oldest = current - slots + 1
local fields = redis.call('HGETALL', KEYS[1])
local used = 0
local expired = {}
local live = {}
for i = 1, #fields, 2 do
  local slot = tonumber(fields[i])
  local count = tonumber(fields[i + 1])
  if slot < oldest then
    table.insert(expired, fields[i])
  else
    used = used + count
    table.insert(live, {slot, count})
  end
end
if #expired > 0 then redis.call('HDEL', KEYS[1], unpack(expired)) end
local allowed = 0
if used + cost <= limit then
  redis.call('HINCRBY', KEYS[1], tostring(current), cost)
  used = used + cost
  allowed = 1
  table.insert(live, {current, cost})
end
redis.call('PEXPIRE', KEYS[1], math.ceil(window_ms + slot_ms))
table.sort(live, function(a, b) return a[1] < b[1] end)
local reset = 0
if #live > 0 then reset = (live[1][1] + slots) * slot_ms - now end
local retry = 0
if allowed == 0 then
  retry = window_ms
  if cost <= limit then
    local freed = 0
    for _, item in ipairs(live) do
      freed = freed + item[2]
      if used - freed + cost <= limit then
        retry = (item[1] + slots) * slot_ms - now
        break
      end
    end
  end
end
return {allowed, limit - used, tostring(math.max(0, reset)), tostring(math.max(0, retry))}
"""


class _RedisLimiter:
    """Holds the client (opened on first use, in the running loop) and the registered script."""

    script_source = ""

    def __init__(self, url: str, limit: int, key_prefix: str = "gf:rl:") -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self.url = url
        self.limit = limit
        self.key_prefix = key_prefix
        self._client: Redis | None = None
        self._script: AsyncScript | None = None

    def _script_for_loop(self) -> AsyncScript:
        if self._script is None:
            from redis.asyncio import Redis

            self._client = Redis.from_url(self.url, socket_timeout=2.0, socket_connect_timeout=2.0)
            self._script = self._client.register_script(self.script_source)
        return self._script

    async def _run(self, key: str, args: list[Any]) -> list[Any]:
        result = await self._script_for_loop()(keys=[self.key_prefix + key], args=args)
        return list(result)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
        self._client, self._script = None, None


class RedisTokenBucketLimiter(_RedisLimiter):
    """Token bucket in Redis: ``limit`` units per ``period_s``, bursts up to ``limit``."""

    script_source = _BUCKET_SCRIPT

    def __init__(
        self, url: str, limit: int, period_s: float = 60.0, key_prefix: str = "gf:rl:"
    ) -> None:
        super().__init__(url, limit, key_prefix)
        self.period_s = period_s

    async def acquire(self, key: str, cost: int = 1) -> RateDecision:
        allowed, tokens, reset_ms, retry_ms = await self._run(
            key, [self.limit, self.period_s * 1000.0, cost]
        )
        return RateDecision(
            allowed=bool(allowed),
            limit=self.limit,
            remaining=max(0, int(float(tokens))),
            reset_after_s=float(reset_ms) / 1000.0,
            retry_after_s=None if allowed else float(retry_ms) / 1000.0,
            scope=key,
        )


class RedisSlidingWindowLimiter(_RedisLimiter):
    """Sliding window in Redis: at most ``limit`` units in any ``window_s`` (``slots`` steps)."""

    script_source = _WINDOW_SCRIPT

    def __init__(
        self,
        url: str,
        limit: int,
        window_s: float = 60.0,
        slots: int = 60,
        key_prefix: str = "gf:rl:",
    ) -> None:
        super().__init__(url, limit, key_prefix)
        self.window_s = window_s
        self.slots = slots

    async def acquire(self, key: str, cost: int = 1) -> RateDecision:
        allowed, remaining, reset_ms, retry_ms = await self._run(
            key, [self.limit, self.window_s * 1000.0, self.slots, cost]
        )
        return RateDecision(
            allowed=bool(allowed),
            limit=self.limit,
            remaining=max(0, int(remaining)),
            reset_after_s=float(reset_ms) / 1000.0,
            retry_after_s=None if allowed else float(retry_ms) / 1000.0,
            scope=key,
        )
