"""The async engine API and the ChatModel contract, over the real packaged SmolLM2."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import pytest

from genai_factory.serving.torch_engine import TorchChatModel, TorchEngine
from genai_factory.serving.torch_engine.core import GenerationRequest
from genai_factory.serving.torch_engine.model import PagedLlama
from genai_factory.serving.torch_engine.sampling import SamplingParams
from genai_factory.shared.contracts import ChatModel
from genai_factory.shared.errors import ConfigError, ServiceUnavailable, ValidationError
from genai_factory.shared.factory import build_component, dump_component
from genai_factory.shared.models import ChatCompletionRequest

from .torch_fixtures import (
    chat_ids,
    new_core,
    run_core,
    smol_paged,
    smol_tokenizer,
    torch_engine,
)

pytestmark = pytest.mark.integration
__all__ = ["smol_paged", "smol_tokenizer", "torch_engine"]  # fixtures, imported for pytest

GREEDY = SamplingParams(temperature=0.0, max_tokens=8)


def _request(prompt: str, **extra: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "smollm2", "messages": [{"role": "user", "content": prompt}], **extra}
    )


@pytest.fixture
def chat(torch_engine: TorchEngine) -> TorchChatModel:
    return TorchChatModel.over(torch_engine, default_max_tokens=8, default_temperature=0.0)


async def _settled(engine: TorchEngine) -> None:
    """Wait until the shared engine has no request left (an earlier test's cancel)."""
    for _ in range(200):
        if not engine.core.has_work():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the engine kept working")


def test_it_satisfies_the_chat_model_contract(chat: TorchChatModel) -> None:
    assert isinstance(chat, ChatModel)


async def test_answers_with_text_usage_and_a_finish_reason(chat: TorchChatModel) -> None:
    answer = await chat.complete(_request("What is the capital of France?"))
    assert answer.model == "smollm2"
    assert "Paris" in answer.text()
    assert answer.usage is not None
    assert answer.usage.prompt_tokens > 10
    assert 0 < answer.usage.completion_tokens <= 8
    assert answer.choices[0].finish_reason in {"stop", "length"}


async def test_streaming_gives_the_same_text_as_complete(chat: TorchChatModel) -> None:
    request = _request("Name three colours.", stream_options={"include_usage": True})
    answer = await chat.complete(request)
    chunks = [chunk async for chunk in chat.stream(request)]
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == answer.text()
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == answer.choices[0].finish_reason and finishes.count(None) >= 1
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert len({c.id for c in chunks}) == 1


async def test_max_tokens_and_stop_strings_end_the_answer(chat: TorchChatModel) -> None:
    capped = await chat.complete(_request("Write a long story about a dragon.", max_tokens=3))
    assert capped.choices[0].finish_reason == "length"
    assert capped.usage is not None and capped.usage.completion_tokens == 3
    full = await chat.complete(_request("Count from one to ten in words.", max_tokens=12))
    word = full.text().split()[1].strip(",.")
    stopped = await chat.complete(
        _request("Count from one to ten in words.", max_tokens=12, stop=[word])
    )
    assert stopped.choices[0].finish_reason == "stop"
    assert word not in stopped.text() and full.text().startswith(stopped.text())


async def test_seeded_sampling_repeats_and_n_gives_distinct_choices(chat: TorchChatModel) -> None:
    request = _request("Tell me a story.", temperature=1.0, seed=7, n=2, max_tokens=8)
    first = await chat.complete(request)
    second = await chat.complete(request)
    assert [c.message.content for c in first.choices] == [c.message.content for c in second.choices]
    assert [c.index for c in first.choices] == [0, 1]
    assert first.choices[0].message.content != first.choices[1].message.content
    streamed: dict[int, str] = {0: "", 1: ""}
    async for chunk in chat.stream(request):
        for choice in chunk.choices:
            streamed[choice.index] += choice.delta.content or ""
    assert [streamed[0], streamed[1]] == [c.message.content for c in first.choices]


async def test_logprobs_come_back_in_the_openai_shape(chat: TorchChatModel) -> None:
    answer = await chat.complete(
        _request("Say yes.", logprobs=True, top_logprobs=3, max_tokens=3, temperature=0)
    )
    content = answer.choices[0].logprobs["content"]  # type: ignore[index]
    assert len(content) == answer.usage.completion_tokens  # type: ignore[union-attr]
    first = content[0]
    assert first["logprob"] <= 0 and len(first["top_logprobs"]) == 3
    assert first["top_logprobs"][0]["logprob"] >= first["logprob"] - 1e-6  # greedy: the best


async def test_unsupported_features_are_client_errors(chat: TorchChatModel) -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    with pytest.raises(ValidationError) as caught:
        await chat.complete(_request("Hi", tools=[tool]))
    assert caught.value.param == "tools"
    with pytest.raises(ValidationError):
        await chat.complete(_request("Hi", response_format={"type": "json_object"}))
    with pytest.raises(ValidationError) as too_long:
        await chat.complete(_request("word " * 1100))
    assert too_long.value.code == "context_length_exceeded"


async def test_requests_join_a_running_batch_and_get_their_own_answers(
    torch_engine: TorchEngine, smol_tokenizer: Any
) -> None:
    await _settled(torch_engine)
    questions = ["What is 2+2?", "Name a fruit.", "What colour is the sky?", "Say hi."]
    prompts = [chat_ids(smol_tokenizer, q) for q in questions]
    alone = [await torch_engine.generate(p, GREEDY) for p in prompts]
    before = torch_engine.stats()

    async def late(index: int) -> Any:
        await asyncio.sleep(0.05 * index)  # arrive while the others decode
        return await torch_engine.generate(prompts[index], GREEDY)

    together = await asyncio.gather(*(late(i) for i in range(len(prompts))))
    assert [r.token_ids for r in together] == [r.token_ids for r in alone]
    after = torch_engine.stats()
    assert after.steps - before.steps < sum(len(r.token_ids) for r in together)
    assert torch_engine.core.blocks.num_used_blocks == 0


async def test_cancel_frees_the_blocks_at_once(
    torch_engine: TorchEngine, smol_tokenizer: Any
) -> None:
    await _settled(torch_engine)
    prompt = chat_ids(smol_tokenizer, "Write a very long essay about rivers.")
    handle = await torch_engine.submit(
        prompt, SamplingParams(temperature=0.0, max_tokens=500, ignore_eos=True)
    )
    events = handle.events()
    first = await anext(events)
    assert first.token_ids and not first.finished
    assert await handle.cancel() is True
    assert torch_engine.core.blocks.num_used_blocks == 0
    rest = [event async for event in events]  # tokens already on their way, then the end
    assert rest[-1].finished and rest[-1].finish_reason == "cancelled"
    assert await torch_engine.cancel("no-such-request") is False


async def test_closing_a_stream_early_cancels_the_request(
    torch_engine: TorchEngine, smol_tokenizer: Any
) -> None:
    await _settled(torch_engine)
    before = torch_engine.stats().generated_tokens
    prompt = chat_ids(smol_tokenizer, "Write a very long essay about mountains.")
    stream = torch_engine.stream(
        prompt, SamplingParams(temperature=0.0, max_tokens=500, ignore_eos=True)
    )
    await anext(stream)
    await stream.aclose()
    await _settled(torch_engine)
    assert torch_engine.core.blocks.num_used_blocks == 0
    assert torch_engine.stats().generated_tokens - before < 500


async def test_the_event_loop_keeps_running_while_the_model_works(
    torch_engine: TorchEngine, smol_tokenizer: Any
) -> None:
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            ticks.append(time.perf_counter())
            await asyncio.sleep(0.005)

    task = asyncio.create_task(ticker())
    prompt = chat_ids(smol_tokenizer, "Describe a cat.")
    start = time.perf_counter()
    await torch_engine.generate(prompt, SamplingParams(temperature=0.0, max_tokens=8))
    elapsed = time.perf_counter() - start
    task.cancel()
    # the loop ticked all along: no gap anywhere near the whole generation's time
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert len(ticks) > 5 and max(gaps) < max(0.5, elapsed / 2)


@pytest.mark.slow
def test_a_full_cache_preempts_and_recomputes_without_changing_output(
    smol_paged: PagedLlama, smol_tokenizer: Any
) -> None:
    prompts = {
        name: chat_ids(smol_tokenizer, question)
        for name, question in {
            "a": "Why is the sea salty?",
            "b": "How do plants grow?",
            "c": "What is a rainbow?",
        }.items()
    }
    params = SamplingParams(temperature=0.0, max_tokens=16, ignore_eos=True)
    assert all(33 <= len(p) <= 48 for p in prompts.values())  # 3 blocks each, then a 4th
    roomy, _, _ = run_core(new_core(smol_paged, num_blocks=64), prompts, params)
    # 9 blocks hold the three prompts but not their answers
    tight = new_core(smol_paged, num_blocks=9, enable_prefix_caching=False)
    squeezed, _, _ = run_core(tight, prompts, params)
    assert tight.stats.preemptions > 0
    assert squeezed == roomy
    assert tight.blocks.num_free_blocks == 9


def test_requests_that_can_never_fit_are_refused(
    smol_paged: PagedLlama, smol_tokenizer: Any
) -> None:
    core = new_core(smol_paged, num_blocks=4, max_model_len=128)
    prompt = chat_ids(smol_tokenizer, "Hello there")
    with pytest.raises(ValidationError):
        core.add_request(GenerationRequest("big", tuple(range(200)), GREEDY))
    with pytest.raises(ValidationError, match="token ids"):
        core.add_request(GenerationRequest("bad", (1, 10**6), GREEDY))
    with pytest.raises(ValidationError, match="no tokens"):
        core.add_request(GenerationRequest("empty", (), GREEDY))
    with pytest.raises(ValidationError, match="KV cache"):
        core.add_request(GenerationRequest("wide", tuple(prompt) * 3, GREEDY))
    core.add_request(GenerationRequest("ok", prompt, GREEDY))
    with pytest.raises(ValidationError, match="already"):
        core.add_request(GenerationRequest("ok", prompt, GREEDY))
    # it fits now but grows past the cache: it ends with a typed error, the pool comes back
    long = SamplingParams(temperature=0.0, max_tokens=120, ignore_eos=True)
    core.add_request(GenerationRequest("grows", prompt, long))
    errors = []
    while core.has_work():
        errors += [e for e in core.step() if e.error is not None]
    assert errors and isinstance(errors[0].error, ServiceUnavailable)
    assert core.blocks.num_free_blocks == 4
    assert core.abort("ok") is None  # long finished


async def test_a_failed_step_ends_its_requests_and_the_engine_goes_on(
    smol_paged: PagedLlama, smol_tokenizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = TorchEngine.from_model(smol_paged, smol_tokenizer, kv_cache_mb=8, threads=1)
    await engine.start()
    prompt = chat_ids(smol_tokenizer, "Hi")
    original = engine.core.step

    def broken() -> Any:
        monkeypatch.setattr(engine.core, "step", original)  # only the first step fails
        raise RuntimeError("simulated kernel failure")

    monkeypatch.setattr(engine.core, "step", broken)
    with pytest.raises(ServiceUnavailable, match="simulated"):
        await engine.generate(prompt, GREEDY)
    result = await engine.generate(prompt, GREEDY)
    assert result.token_ids and engine.core.blocks.num_used_blocks == 0
    await engine.submit(prompt, GREEDY, request_id="dup")
    with pytest.raises(ConfigError):
        await engine.submit(prompt, GREEDY, request_id="dup")
    await engine.close()
    with pytest.raises(ServiceUnavailable):
        await engine.start()


def test_config_round_trips_through_the_component_factory() -> None:
    spec = {
        "type": "genai_factory.serving.torch_engine:TorchChatModel",
        "params": {
            "model": "smollm2",
            "max_batch_size": 4,
            "speculative": "ngram",
            "adaptive_speculation": True,
            "speculative_max_batch_size": 2,
        },
    }
    chat = build_component(spec)  # builds without loading: the model loads on first use
    assert isinstance(chat, TorchChatModel)
    params = dump_component(chat)["params"]
    assert params["max_batch_size"] == 4 and params["speculative"] == "ngram"
    assert params["adaptive_speculation"] is True and params["speculative_max_batch_size"] == 2
    assert build_component({"type": spec["type"], "params": params}).to_params() == params
    with pytest.raises(ConfigError):
        TorchEngine(quantization="int3")
    with pytest.raises(ConfigError):
        TorchEngine(speculative="guess")
    with pytest.raises(ConfigError):
        TorchEngine(speculative="ngram", speculative_max_batch_size=0)
    with pytest.raises(ConfigError):
        TorchEngine(block_size=0)
    with pytest.raises(ValueError, match="default_max_tokens"):
        TorchChatModel(default_max_tokens=0)
    with pytest.raises(ServiceUnavailable):
        _ = TorchEngine().tokenizer


async def test_a_configured_model_loads_quantises_and_answers(
    smol_paged: PagedLlama, monkeypatch: pytest.MonkeyPatch
) -> None:
    from genai_factory.serving.torch_engine import engine as engine_module

    from .torch_fixtures import _loaded

    loads: list[str] = []

    def already_loaded(model: str) -> Any:  # the session's model instead of a 20 s reload
        loads.append(model)
        return _loaded()[:2]

    monkeypatch.setattr(engine_module, "load_hf_model", already_loaded)
    chat = build_component(
        {
            "type": "genai_factory.serving.torch_engine:TorchChatModel",
            "params": {"quantization": "int8-weight-only", "kv_cache_mb": 8, "threads": 1},
        }
    )
    answer = await chat.complete(_request("What is the capital of France?", temperature=0))
    assert loads == ["smollm2"] and "Paris" in answer.text()
    engine = chat.engine
    assert engine.core.model is not smol_paged  # its own quantised copy
    assert engine.core.model.weight_bytes() < 0.5 * smol_paged.weight_bytes()
    per_block = smol_paged.shape.kv_bytes_per_token() * engine.block_size
    assert engine.core.config.num_blocks == (8 << 20) // per_block
    await chat.close()


async def test_stats_report_batch_kv_blocks_and_prefix_hits_for_metrics(
    chat: TorchChatModel,
) -> None:
    prompt = "Tell me about the sea. " * 8
    request = ChatCompletionRequest.model_validate(
        {
            "model": "smollm2",
            "temperature": 0,
            "max_tokens": 2,
            "messages": [{"role": "user", "content": prompt}],
        }
    )
    await chat.complete(request)
    await chat.complete(request)  # the same prompt again: its full blocks come from the cache
    stats = chat.stats()
    assert stats["kv_blocks_total"] > 0
    assert 0 <= stats["kv_blocks_used"] <= stats["kv_blocks_total"]
    assert stats["batch_size"] == 0  # nothing running between requests
    assert 0 < stats["prefix_cache_hit_rate"] <= 1
