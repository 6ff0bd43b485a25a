"""Budget counters in Redis: every operation is one Lua script, so it is atomic across replicas.

Keys under ``key_prefix``:

- ``c:<counter>``: a counter (integer nano-USD or tokens), expiring after its window;
- ``r:<reservation id>``: a hash with the reservation's state and held amounts per counter;
- ``exp``: a sorted set of held reservations by deadline (Redis server time, ms);
- ``outbox``: settled spend records the ledger has not confirmed yet.

``reserve`` first releases up to ``sweep_batch`` reservations whose deadline passed, then checks
every hard limit and increments every counter, or none. ``settle`` swaps the held amount for the
real one and moves the record to the outbox; ``release`` gives the hold back. A settle or release
of a reservation already settled changes nothing. The scripts use the server's clock, so replicas
with skewed clocks agree on deadlines.

The scripts touch keys they are not passed (the swept reservations and their counters), so they
need a standalone Redis (or Sentinel); Redis Cluster is not supported.

Example (needs a Redis server)::

    backend = RedisBudgetBackend("redis://127.0.0.1:6379/0", key_prefix="myapp:cost:")
    outcome = await backend.reserve("res-1", [Hold("b|team:a|total", "usd", 10, 100)])
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, cast

import orjson

from genai_factory.cost.backends import (
    DEFAULT_KEEP_S,
    DEFAULT_RESERVATION_TTL_S,
    CounterChange,
    Hold,
    ReserveOutcome,
    SettleOutcome,
    SettleStatus,
    _check_ttl,
)
from genai_factory.cost.resp import RedisReplyError, RedisScript, RespClient
from genai_factory.shared.errors import ConfigError, Conflict

__all__ = ["RedisBudgetBackend"]

# Releases the holds of reservations whose deadline passed (shared by every script).
_SWEEP = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function give_back(rkey, prefix)
  local n = tonumber(redis.call('HGET', rkey, 'n') or '0')
  for i = 1, n do
    local f = redis.call('HMGET', rkey, 'k' .. i, 'a' .. i)
    local ckey = prefix .. 'c:' .. f[1]
    if redis.call('EXISTS', ckey) == 1 then
      redis.call('DECRBY', ckey, f[2])
    end
  end
end
local function sweep(zkey, prefix, now, batch)
  local ids = redis.call('ZRANGEBYSCORE', zkey, '-inf', now, 'LIMIT', 0, batch)
  for _, id in ipairs(ids) do
    local rkey = prefix .. 'r:' .. id
    if redis.call('HGET', rkey, 'state') == 'held' then
      give_back(rkey, prefix)
      redis.call('HSET', rkey, 'state', 'expired')
    end
    redis.call('ZREM', zkey, id)
  end
  return #ids
end
"""

# KEYS: exp, r:<id>
# ARGV: id, ttl_ms, keep_ms, prefix, sweep_batch, holds: a JSON array of strings, six per counter
# (name, unit, amount, limit, mode, expire_at). One packed argument instead of six per counter:
# the client encodes every argument separately, and that was most of a call's client time.
_RESERVE = (
    _SWEEP
    + """
local now = now_ms()
local prefix = ARGV[4]
sweep(KEYS[1], prefix, now, tonumber(ARGV[5]))
if redis.call('EXISTS', KEYS[2]) == 1 then
  return redis.error_reply('reservation id already in use')
end
local h = cjson.decode(ARGV[6])
local n = #h / 6
local ckeys = {}
for i = 1, n do ckeys[i] = prefix .. 'c:' .. h[(i - 1) * 6 + 1] end
local before = {}
local values = {}
if n > 0 then values = redis.call('MGET', unpack(ckeys)) end  -- one read for all
for i = 1, n do
  local b = (i - 1) * 6
  local used = tonumber(values[i] or '0')
  before[i] = used
  if h[b + 5] == 'hard' then
    local limit = tonumber(h[b + 4])
    if used >= limit or used + tonumber(h[b + 3]) > limit then
      return {0, i, used}
    end
  end
end
local reply = {1}
local fields = {'state', 'held', 'n', n}
for i = 1, n do
  local b = (i - 1) * 6
  local after = redis.call('INCRBY', ckeys[i], h[b + 3])
  if not values[i] and tonumber(h[b + 6]) > 0 then  -- a counter gets its expiry once, when new
    redis.call('EXPIREAT', ckeys[i], h[b + 6])
  end
  table.insert(reply, before[i])
  table.insert(reply, after)
  for _, v in ipairs({'k' .. i, h[b + 1], 'u' .. i, h[b + 2], 'a' .. i, h[b + 3],
                      'e' .. i, h[b + 6]}) do
    table.insert(fields, v)
  end
end
redis.call('HSET', KEYS[2], unpack(fields))
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[2]) + tonumber(ARGV[3]))
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return reply
"""
)

# KEYS: exp, r:<id>, outbox
# ARGV: id, usd_nano, tokens, payload, keep_ms, prefix, sweep_batch, fallback: a JSON array of
# strings, three per counter (name, unit, expire_at), used when the reservation is gone
_SETTLE = (
    _SWEEP
    + """
local now = now_ms()
sweep(KEYS[1], ARGV[6], now, tonumber(ARGV[7]))
local state = redis.call('HGET', KEYS[2], 'state')
if state == 'settled' then
  return {'duplicate'}
end
local actual = {usd = ARGV[2], tokens = ARGV[3]}
local reply = {}
local function apply(ckey, name, amount, held, expire_at)
  local delta = tonumber(amount)
  if held then
    if redis.call('EXISTS', ckey) == 0 then
      return  -- the window is over and its counter dropped
    end
    delta = delta - tonumber(held)
  end
  local after = redis.call('INCRBY', ckey, delta)  -- one write, and it returns the new value
  if not held and tonumber(expire_at) > 0 then  -- a held counter exists, with its expiry
    redis.call('EXPIREAT', ckey, expire_at)
  end
  table.insert(reply, name)
  table.insert(reply, after - delta)
  table.insert(reply, after)
end
local status = 'late'
if state then
  if state == 'held' then status = 'settled' end
  local n = tonumber(redis.call('HGET', KEYS[2], 'n') or '0')
  for i = 1, n do
    local f = redis.call('HMGET', KEYS[2], 'k' .. i, 'u' .. i, 'a' .. i, 'e' .. i)
    local held = nil
    if state == 'held' then held = f[3] end
    apply(ARGV[6] .. 'c:' .. f[1], f[1], actual[f[2]], held, f[4])
  end
else
  local f = cjson.decode(ARGV[8])
  for i = 1, #f / 3 do
    local b = (i - 1) * 3
    apply(ARGV[6] .. 'c:' .. f[b + 1], f[b + 1], actual[f[b + 2]], nil, f[b + 3])
  end
end
redis.call('HSET', KEYS[2], 'state', 'settled')
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[5]))
redis.call('ZREM', KEYS[1], ARGV[1])
if ARGV[4] ~= '' then
  redis.call('HSET', KEYS[3], ARGV[1], ARGV[4])
end
table.insert(reply, 1, status)
return reply
"""
)

# KEYS: exp, r:<id>   ARGV: id, keep_ms, prefix, sweep_batch
_RELEASE = (
    _SWEEP
    + """
local now = now_ms()
sweep(KEYS[1], ARGV[3], now, tonumber(ARGV[4]))
if redis.call('HGET', KEYS[2], 'state') ~= 'held' then
  return 0
end
give_back(KEYS[2], ARGV[3])
redis.call('HSET', KEYS[2], 'state', 'released')
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[2]))
redis.call('ZREM', KEYS[1], ARGV[1])
return 1
"""
)

# KEYS: exp   ARGV: prefix, sweep_batch
_SWEEP_ONLY = _SWEEP + "\nreturn sweep(KEYS[1], ARGV[1], now_ms(), tonumber(ARGV[2]))\n"


def _pack(values: Sequence[str]) -> str:
    """Strings as one JSON array for a script's ``cjson.decode`` (numbers travel as strings, so
    Redis's INCRBY gets them exactly, never as Lua doubles)."""
    return orjson.dumps(values).decode()


class RedisBudgetBackend:
    """Budget counters in Redis, exact across processes and replicas (atomic Lua scripts).

    ``url`` (or the environment variable named by ``url_env``, which keeps a password out of the
    config file) points at the server; ``key_prefix`` isolates this deployment's keys.
    """

    # The outbox lives outside this process: a record parked there by settle survives kill -9
    # of the caller, so the engine may write the ledger after answering (see budgets.py).
    durable_outbox = True

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        key_prefix: str = "gf:cost:",
        reservation_ttl_s: float = DEFAULT_RESERVATION_TTL_S,
        keep_s: float = DEFAULT_KEEP_S,
        sweep_batch: int = 100,
        url_env: str | None = None,
        timeout_s: float = 5.0,
    ) -> None:
        _check_ttl(reservation_ttl_s, keep_s)
        if sweep_batch < 1:
            raise ConfigError("'sweep_batch' must be at least 1", param="sweep_batch")
        if url_env is not None and not os.environ.get(url_env):
            raise ConfigError(
                f"environment variable {url_env} (url_env) is not set", param="url_env"
            )
        self.url = url
        self.key_prefix = key_prefix
        self.reservation_ttl_s = reservation_ttl_s
        self.keep_s = keep_s
        self.sweep_batch = sweep_batch
        self.url_env = url_env
        self.timeout_s = timeout_s
        address = os.environ[url_env] if url_env else url
        # our own small client (resp.py): redis-py's took as much CPU a call as the budget logic;
        # it raises ServiceUnavailable (a 503 the caller may retry) for an unreachable, slow or
        # misbehaving server
        self._client = RespClient(address, timeout_s=timeout_s)
        self._reserve = RedisScript(_RESERVE)
        self._settle = RedisScript(_SETTLE)
        self._release = RedisScript(_RELEASE)
        self._sweep = RedisScript(_SWEEP_ONLY)

    def _key(self, kind: str, name: str = "") -> str:
        return f"{self.key_prefix}{kind}{name}"

    @property
    def _ttl_ms(self) -> int:
        return max(1, round(self.reservation_ttl_s * 1000))

    @property
    def _keep_ms(self) -> int:
        return max(1, round(self.keep_s * 1000))

    async def reserve(self, reservation_id: str, holds: Sequence[Hold]) -> ReserveOutcome:
        keys = [self._key("exp"), self._key("r:", reservation_id)]
        packed: list[str] = []
        for hold in holds:
            packed += (
                hold.counter, hold.unit, str(hold.amount), str(hold.limit), hold.mode,
                str(hold.expire_at),
            )  # fmt: skip
        args: list[Any] = [
            reservation_id,
            self._ttl_ms,
            self._keep_ms,
            self.key_prefix,
            self.sweep_batch,
            _pack(packed),
        ]
        try:
            reply = cast(list[Any], await self._client.evalsha(self._reserve, keys, args))
        except RedisReplyError as exc:
            if "already in use" in exc.message:
                raise Conflict(
                    f"reservation id {reservation_id!r} is already in use", param="reservation_id"
                ) from exc
            raise
        if int(reply[0]) == 0:
            return ReserveOutcome(
                False, blocked=holds[int(reply[1]) - 1].counter, blocked_used=int(reply[2])
            )
        changes = tuple(
            CounterChange(hold.counter, int(reply[1 + 2 * i]), int(reply[2 + 2 * i]))
            for i, hold in enumerate(holds)
        )
        return ReserveOutcome(True, changes)

    async def settle(
        self,
        reservation_id: str,
        *,
        usd_nano: int,
        tokens: int,
        fallback: Sequence[Hold],
        payload: str,
    ) -> SettleOutcome:
        keys = [self._key("exp"), self._key("r:", reservation_id), self._key("outbox")]
        packed: list[str] = []
        for hold in fallback:
            packed += (hold.counter, hold.unit, str(hold.expire_at))
        args: list[Any] = [
            reservation_id,
            usd_nano,
            tokens,
            payload,
            self._keep_ms,
            self.key_prefix,
            self.sweep_batch,
            _pack(packed),
        ]
        reply = cast(list[Any], await self._client.evalsha(self._settle, keys, args))
        status = cast(SettleStatus, str(reply[0]))
        changes = tuple(
            CounterChange(str(reply[i]), int(reply[i + 1]), int(reply[i + 2]))
            for i in range(1, len(reply), 3)
        )
        return SettleOutcome(status, changes)

    async def release(self, reservation_id: str) -> bool:
        keys = [self._key("exp"), self._key("r:", reservation_id)]
        args: list[Any] = [reservation_id, self._keep_ms, self.key_prefix, self.sweep_batch]
        return int(await self._client.evalsha(self._release, keys, args)) == 1

    async def acknowledge(self, reservation_id: str) -> None:
        await self._client.execute("HDEL", self._key("outbox"), reservation_id)

    async def acknowledge_many(self, reservation_ids: Sequence[str]) -> None:
        """Drop a batch from the outbox in one round trip (one HDEL)."""
        if reservation_ids:
            await self._client.execute("HDEL", self._key("outbox"), *reservation_ids)

    async def pending(self) -> list[tuple[str, str]]:
        flat = cast(list[str], await self._client.execute("HGETALL", self._key("outbox")))
        return [(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]

    async def usage(self, counters: Sequence[str]) -> dict[str, int]:
        if not counters:
            return {}
        values = cast(
            list[str | None],
            await self._client.execute("MGET", *[self._key("c:", c) for c in counters]),
        )
        return {c: int(v or 0) for c, v in zip(counters, values, strict=True)}

    async def seed(self, counter: str, amount: int, expire_at: int = 0) -> bool:
        key = self._key("c:", counter)
        expiry: tuple[str | int, ...] = ("EXAT", expire_at) if expire_at else ()
        done = await self._client.execute("SET", key, amount, "NX", *expiry)
        return done is not None

    async def sweep(self) -> int:
        swept = await self._client.evalsha(
            self._sweep, [self._key("exp")], [self.key_prefix, self.sweep_batch]
        )
        return int(swept)

    async def close(self) -> None:
        await self._client.close()
