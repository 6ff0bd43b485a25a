"""The model manager: admission (queue, timeouts, draining), lazy loading and LRU eviction.

Most tests use a scripted engine so that timing is exact; the last ones load two real
llama.cpp engines under a budget that only fits one.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest

from genai_factory.serving.engines.llamacpp import LlamaCppChatModel
from genai_factory.serving.server import ModelConfig, ModelManager, ServerConfig
from genai_factory.serving.server.metrics import ServingMetrics
from genai_factory.shared.errors import (
    ConfigError,
    NotFound,
    RateLimited,
    ServiceUnavailable,
    to_http,
)
from genai_factory.shared.models import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
)

MB = 1024 * 1024


class ScriptedEngine:
    """A unit-test engine: answers 'ok' after ``seconds``; records load/close."""

    def __init__(self, seconds: float = 0.0, memory_mb: float | None = None) -> None:
        self.seconds = seconds
        self.memory_mb = memory_mb
        self.loaded = False
        self.closed = False

    def load(self) -> None:
        self.loaded = True

    def close(self) -> None:
        self.closed = True

    async def complete(self, request: ChatCompletionRequest) -> ChatCompletionResponse:
        await asyncio.sleep(self.seconds)
        return ChatCompletionResponse.model_validate(
            {
                "model": request.model,
                "choices": [{"message": {"role": "assistant", "content": "ok"}}],
            }
        )

    async def stream(self, request: ChatCompletionRequest) -> AsyncIterator[ChatCompletionChunk]:
        await asyncio.sleep(self.seconds)
        yield ChatCompletionChunk.model_validate(
            {"id": "c", "model": request.model, "choices": [{"delta": {"content": "ok"}}]}
        )

    def stats(self) -> dict[str, Any]:
        return {"batch_size": 1, "kv_blocks_used": 3, "label": "not a number"}


class SizedEngine(ScriptedEngine):
    def memory_bytes(self) -> int:
        return int((self.memory_mb or 0) * MB)


def models(*names: str, **settings: Any) -> list[ModelConfig]:
    return [ModelConfig.model_validate({"name": name, **settings}) for name in names]


def manager_of(
    configs: list[ModelConfig], budget_mb: float = 4096, **engine: Any
) -> tuple[ModelManager, dict[str, list[ScriptedEngine]]]:
    built: dict[str, list[ScriptedEngine]] = {}

    def build(config: ModelConfig) -> ScriptedEngine:
        made = SizedEngine(**engine)
        built.setdefault(config.name, []).append(made)
        return made

    return ModelManager(configs, memory_budget_mb=budget_mb, builder=build), built


async def hold(manager: ModelManager, name: str, release: asyncio.Event) -> None:
    async with manager.lease(name):
        await release.wait()


async def test_a_full_queue_is_refused_at_once_with_429_and_retry_after() -> None:
    manager, _ = manager_of(models("m", max_concurrency=1, max_queue=1))
    await manager.start()
    release = asyncio.Event()
    running = asyncio.create_task(hold(manager, "m", release))
    queued = asyncio.create_task(hold(manager, "m", release))
    await asyncio.sleep(0.01)
    with pytest.raises(RateLimited) as info:
        async with manager.lease("m"):
            pass
    status, body, headers = to_http(info.value)
    assert (status, body["error"]["code"]) == (429, "queue_full")
    assert int(headers["retry-after"]) >= 1
    state = manager.states()[0]
    assert (state.running, state.waiting, state.rejected) == (1, 1, {"queue_full": 1})
    release.set()
    await asyncio.gather(running, queued)
    assert manager.states()[0].running == 0


async def test_waiting_past_the_queue_timeout_is_503() -> None:
    manager, _ = manager_of(models("m", max_concurrency=1, queue_timeout_s=0.05))
    await manager.start()
    release = asyncio.Event()
    running = asyncio.create_task(hold(manager, "m", release))
    await asyncio.sleep(0.01)
    with pytest.raises(ServiceUnavailable) as info:
        async with manager.lease("m"):
            pass
    assert info.value.code == "queue_timeout" and info.value.retry_after is not None
    assert manager.states()[0].waiting == 0
    release.set()
    await running


async def test_draining_refuses_new_requests_and_waits_for_running_ones() -> None:
    manager, built = manager_of(models("m", preload=True))
    await manager.start()
    release = asyncio.Event()
    running = asyncio.create_task(hold(manager, "m", release))
    await asyncio.sleep(0.01)
    assert await manager.drain(timeout_s=0.05) is False  # one still runs
    with pytest.raises(ServiceUnavailable) as info:
        async with manager.lease("m"):
            pass
    assert info.value.code == "draining" and not manager.ready
    release.set()
    assert await manager.drain(timeout_s=5) is True
    await running
    await manager.close()
    assert built["m"][0].closed


async def test_requests_before_start_are_503_and_unknown_models_404() -> None:
    manager, _ = manager_of(models("m"))
    with pytest.raises(ServiceUnavailable, match="loading"):
        async with manager.lease("m"):
            pass
    await manager.start()
    with pytest.raises(NotFound, match="serves: m"):
        async with manager.lease("other"):
            pass


async def test_models_load_lazily_on_first_use_unless_preloaded() -> None:
    manager, built = manager_of(models("eager", preload=True) + models("lazy"))
    await manager.start()
    assert {s.name: s.loaded for s in manager.states()} == {"eager": True, "lazy": False}
    async with manager.lease("lazy") as engine:
        answer = await engine.complete(
            ChatCompletionRequest.model_validate(
                {"model": "lazy", "messages": [{"role": "user", "content": "hi"}]}
            )
        )
    assert answer.text() == "ok" and built["lazy"][0].loaded


async def test_least_recently_used_idle_models_are_evicted_to_fit_the_budget() -> None:
    manager, built = manager_of(models("a", "b", "c", memory_mb=100), budget_mb=250)
    await manager.start()
    for name in ("a", "b", "c"):  # the third does not fit: 'a' goes
        async with manager.lease(name):
            pass
    assert {s.name: s.loaded for s in manager.states()} == {"a": False, "b": True, "c": True}
    assert built["a"][0].closed and manager.used_bytes == 200 * MB
    async with manager.lease("a"):  # back again: now 'b' is the least recently used
        pass
    states = {s.name: s for s in manager.states()}
    assert not states["b"].loaded and states["a"].loaded and states["c"].loaded
    assert (states["a"].evictions, states["b"].evictions, states["c"].evictions) == (1, 1, 0)
    assert len(built["a"]) == 2  # rebuilt, not resurrected


async def test_busy_models_are_never_evicted() -> None:
    manager, _ = manager_of(models("a", "b", memory_mb=100), budget_mb=150)
    await manager.start()
    release = asyncio.Event()
    busy = asyncio.create_task(hold(manager, "a", release))
    await asyncio.sleep(0.01)
    with pytest.raises(ServiceUnavailable) as info:
        async with manager.lease("b"):
            pass
    assert info.value.code == "memory_budget"
    release.set()
    await busy
    async with manager.lease("b"):  # 'a' is idle now, so it makes room
        pass
    assert {s.name: s.loaded for s in manager.states()} == {"a": False, "b": True}


async def test_each_model_has_its_own_concurrency_limit() -> None:
    manager, _ = manager_of(models("a", max_concurrency=1, max_queue=0) + models("b"))
    await manager.start()
    release = asyncio.Event()
    busy = asyncio.create_task(hold(manager, "a", release))
    await asyncio.sleep(0.01)
    async with manager.lease("b"):  # 'a' being full does not stop 'b'
        pass
    with pytest.raises(RateLimited):
        async with manager.lease("a"):
            pass
    release.set()
    await busy


async def test_sizes_come_from_config_then_the_engine_then_the_model_file() -> None:
    configured, _ = manager_of(models("m", memory_mb=7, preload=True), memory_mb=50)
    await configured.start()
    assert configured.used_bytes == 7 * MB
    measured, _ = manager_of(models("m", preload=True), memory_mb=50)
    await measured.start()
    assert measured.used_bytes == 50 * MB
    plain = ModelManager(models("m", preload=True), builder=lambda _: ScriptedEngine())
    await plain.start()
    smollm2_file = LlamaCppChatModel("smollm2")._path.stat().st_size
    assert plain.used_bytes == smollm2_file  # the default spec names the packaged model
    nameless = ModelManager(
        models("m", preload=True, engine={"type": "x.y:Z", "params": {}}),
        builder=lambda _: ScriptedEngine(),
    )
    await nameless.start()
    assert nameless.used_bytes == 0


async def test_a_model_larger_than_the_budget_is_a_config_error() -> None:
    manager, _ = manager_of(models("m", memory_mb=500, preload=True), budget_mb=100)
    with pytest.raises(ConfigError, match="more than the whole memory budget"):
        await manager.start()


def test_metrics_show_the_managers_state_and_the_engines_stats() -> None:
    async def scenario() -> bytes:
        manager, _ = manager_of(models("m", preload=True))
        await manager.start()
        return ServingMetrics(manager).render()

    text = asyncio.run(scenario()).decode()
    assert 'gf_serving_model_loaded{model="m"} 1.0' in text
    assert 'gf_serving_kv_blocks_used{model="m"} 3.0' in text
    assert 'gf_serving_batch_size{model="m"} 1.0' in text
    assert "not a number" not in text
    assert "gf_serving_ready 1.0" in text


def test_engine_stats_may_be_a_dataclass_or_an_object() -> None:
    @dataclasses.dataclass
    class Stats:
        kv_blocks_used: int = 7
        prefix_cache_hit_rate: float = 0.5
        name: str = "engine"

    class Plain:
        def __init__(self) -> None:
            self.batch_size = 3

    async def scenario(stats: Any) -> list[dict[str, float]]:
        engine = ScriptedEngine()
        engine.stats = lambda: stats  # type: ignore[method-assign]
        manager = ModelManager(models("m", preload=True), builder=lambda _: engine)
        await manager.start()
        return [state.engine_stats for state in manager.states()]

    assert asyncio.run(scenario(Stats())) == [{"kv_blocks_used": 7.0, "prefix_cache_hit_rate": 0.5}]
    assert asyncio.run(scenario(Plain())) == [{"batch_size": 3.0}]
    assert asyncio.run(scenario(42)) == [{}]  # unreadable stats: none, and no failed scrape


def test_bad_configs_are_refused() -> None:
    with pytest.raises(ConfigError):
        ModelManager([])
    with pytest.raises(ConfigError, match="unique"):
        ModelManager(models("a", "a"))
    with pytest.raises(ValueError, match="unique"):
        ServerConfig.model_validate({"models": [{"name": "a"}], "embeddings": [{"name": "a"}]})
    with pytest.raises(ConfigError, match="cannot import"):
        ModelManager(models("a", engine={"type": "no_such_module_gf:Engine"})).check()


# ---------------------------------------------------------------------------------------------
# two real llama.cpp engines under a budget that holds one


@pytest.mark.integration
@pytest.mark.slow
async def test_two_real_engines_take_turns_under_a_small_budget() -> None:
    engine = {
        "type": "genai_factory.serving.engines.llamacpp:LlamaCppChatModel",
        "params": {"model": "smollm2", "context_window": 256, "threads": 2},
    }
    configs = models("first", "second", engine=engine)
    manager = ModelManager(configs, memory_budget_mb=150)  # one ~100 MB model fits, not two
    await manager.start()
    request = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3}
    try:
        for name in ("first", "second", "first"):
            async with manager.lease(name) as chat:
                answer = await chat.complete(
                    ChatCompletionRequest.model_validate({"model": name, **request})
                )
            assert answer.usage is not None and answer.usage.completion_tokens <= 3
        states = {s.name: s for s in manager.states()}
        assert states["first"].loaded and not states["second"].loaded
        assert (states["first"].evictions, states["second"].evictions) == (1, 1)
        assert 90 * MB < manager.used_bytes <= 150 * MB
    finally:
        await manager.close()
    assert manager.used_bytes == 0
