"""Rate limiting by content: blocked attempts and near-duplicate spam, in process and in Redis."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from genai_factory.guardrails.ratelimit import ContentRateLimiter, simhash

SPAM = "Congratulations! You won a free cruise, call now to claim your prize number {n}"


def distance(a: str, b: str) -> int:
    return bin(simhash(a) ^ simhash(b)).count("1")


def test_simhash_keeps_near_texts_near_and_far_texts_far() -> None:
    assert distance(SPAM.format(n=1), SPAM.format(n=2)) <= 6
    assert distance(SPAM.format(n=1), "What is the boiling point of water at altitude?") > 10


@given(st.text(max_size=100))
def test_simhash_is_a_deterministic_64_bit_value(text: str) -> None:
    value = simhash(text)
    assert 0 <= value < 2**64 and value == simhash(text)


async def test_blocked_attempts_start_a_cooldown_per_principal() -> None:
    limiter = ContentRateLimiter(max_blocked=3, window_s=60, cooldown_s=30)
    for i in range(2):
        assert await limiter.record("mallory", f"attack {i} " * 3, blocked=True) is None
    assert await limiter.cooldown("mallory") is None
    started = await limiter.record("mallory", "attack 3", blocked=True)
    assert started is not None and started.reason == "blocked_attempts"
    running = await limiter.cooldown("mallory")
    assert running is not None and 0 < running.retry_after_s <= 30
    assert (await limiter.record("mallory", "hello", blocked=False)) is not None
    assert await limiter.cooldown("alice") is None  # others are not affected


async def test_near_duplicate_spam_starts_a_cooldown() -> None:
    limiter = ContentRateLimiter(max_near_duplicates=4, window_s=60, cooldown_s=30)
    for n in range(3):
        assert await limiter.record("spammer", SPAM.format(n=n), blocked=False) is None
    hit = await limiter.record("spammer", SPAM.format(n=99), blocked=False)
    assert hit is not None and hit.reason == "near_duplicates"
    varied = ContentRateLimiter(max_near_duplicates=4)
    for text in ["What is 2+2?", "Name a prime number.", "Who wrote Hamlet?", "Is the sun a star?"]:
        assert await varied.record("curious", text, blocked=False) is None


async def test_window_expiry_and_cooldown_expiry() -> None:
    limiter = ContentRateLimiter(max_blocked=2, window_s=0.05, cooldown_s=0.05)
    await limiter.record("k", "a", blocked=True)
    await asyncio.sleep(0.08)
    assert await limiter.record("k", "b", blocked=True) is None  # the first fell out of the window
    assert (await limiter.record("k", "c", blocked=True)) is not None
    await asyncio.sleep(0.08)
    assert await limiter.cooldown("k") is None


def test_invalid_settings() -> None:
    with pytest.raises(ValueError, match="max_blocked"):
        ContentRateLimiter(max_blocked=0)
    with pytest.raises(ValueError, match="bits"):
        ContentRateLimiter(max_distance=65)
    assert "redis_url" not in ContentRateLimiter().to_params()


@pytest.mark.integration
async def test_redis_state_is_shared_across_replicas(redis_url: str, redis_namespace: str) -> None:
    replicas = [
        ContentRateLimiter(
            max_blocked=3,
            max_near_duplicates=4,
            window_s=60,
            cooldown_s=30,
            redis_url=redis_url,
            key_prefix=redis_namespace,
        )
        for _ in range(2)
    ]
    try:
        # blocked attempts spread over two replicas add up
        assert await replicas[0].record("mallory", "x", blocked=True) is None
        assert await replicas[1].record("mallory", "y", blocked=True) is None
        hit = await replicas[0].record("mallory", "z", blocked=True)
        assert hit is not None and hit.reason == "blocked_attempts" and 29 < hit.retry_after_s <= 30
        seen = await replicas[1].cooldown("mallory")
        assert seen is not None and seen.reason == "blocked_attempts"
        # near-duplicates, concurrently from both replicas
        results = await asyncio.gather(
            *(replicas[n % 2].record("spammer", SPAM.format(n=n), blocked=False) for n in range(4))
        )
        assert [r.reason for r in results if r] == ["near_duplicates"]
        assert await replicas[0].cooldown("spammer") is not None
        assert await replicas[1].cooldown("nobody") is None
        assert replicas[0].to_params()["redis_url"] == redis_url
    finally:
        for replica in replicas:
            await replica.close()
