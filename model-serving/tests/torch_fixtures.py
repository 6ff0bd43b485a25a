"""Fixtures shared by the torch-engine tests: the real packaged SmolLM2, loaded once per process.

Test modules import the fixtures they use (``from .torch_fixtures import ...``). Importing a
fixture into two modules makes two fixture definitions, so the loading itself is cached here
(functools.cache) and happens once per test process (~20 s).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from genai_factory.serving.torch_engine.core import EngineConfig, EngineCore, GenerationRequest
from genai_factory.serving.torch_engine.engine import TorchEngine
from genai_factory.serving.torch_engine.model import PagedLlama, load_hf_model
from genai_factory.serving.torch_engine.sampling import SamplingParams, TokenLogprob

SYSTEM_PROMPT = (
    "You are a careful assistant for a public library. Answer in one or two short sentences, "
    "use plain words, never invent facts, say when you do not know, and always be polite to "
    "every visitor, whatever they ask about books, opening hours, events, or membership cards."
)


@functools.cache
def _loaded() -> tuple[Any, Any, PagedLlama]:
    # One intra-op thread: on a small shared CPU, OpenMP threads that wait on each other make
    # every matmul many times slower (measured: 0.9 ms vs 28 ms for one projection under load).
    torch.set_num_threads(1)
    hf_model, tokenizer = load_hf_model("smollm2")
    return hf_model, tokenizer, PagedLlama.from_hf(hf_model)


@pytest.fixture(scope="session")
def smol_hf() -> Any:
    """The transformers LlamaForCausalLM (the reference implementation)."""
    return _loaded()[0]


@pytest.fixture(scope="session")
def smol_tokenizer() -> Any:
    return _loaded()[1]


@pytest.fixture(scope="session")
def smol_paged() -> PagedLlama:
    """Our paged model over the same weights (fp32)."""
    return _loaded()[2]


@functools.cache
def _engine() -> TorchEngine:
    _, tokenizer, paged = _loaded()
    return TorchEngine.from_model(
        paged, tokenizer, kv_cache_mb=24, max_batch_size=8, max_model_len=1024, threads=1
    )


@pytest.fixture(scope="session")
def torch_engine() -> Iterator[TorchEngine]:
    """An async engine shared by the tests (each test's event loop may use it)."""
    engine = _engine()
    yield engine
    asyncio.run(engine.close())


def chat_ids(tokenizer: Any, question: str, system: str | None = None) -> tuple[int, ...]:
    """A user question (and optional system prompt) through the chat template, as token ids."""
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": question})
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return tuple(tokenizer.encode(text, add_special_tokens=False))


@functools.cache
def hf_greedy(prompt: tuple[int, ...], max_new_tokens: int) -> tuple[list[int], torch.Tensor]:
    """transformers' own greedy tokens and per-step log-probabilities ``[steps, vocab]``."""
    hf_model = _loaded()[0]
    with torch.inference_mode():
        out = hf_model.generate(
            torch.tensor([prompt]),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
            pad_token_id=2,
        )
    tokens = out.sequences[0, len(prompt) :].tolist()
    logprobs = torch.log_softmax(torch.stack(out.logits)[:, 0].float(), dim=-1)
    return tokens, logprobs


def run_core(
    core: EngineCore,
    prompts: dict[str, tuple[int, ...]],
    params: SamplingParams,
    arrivals: dict[str, int] | None = None,
) -> tuple[dict[str, list[int]], dict[str, list[TokenLogprob]], dict[str, int]]:
    """Drive an engine core step by step; ``arrivals`` says at which step each request joins.

    Returns tokens, log-probabilities and cached prompt tokens per request.
    """
    arrivals = arrivals or dict.fromkeys(prompts, 0)
    tokens: dict[str, list[int]] = {name: [] for name in prompts}
    logprobs: dict[str, list[TokenLogprob]] = {name: [] for name in prompts}
    cached: dict[str, int] = {}
    step = 0
    pending = dict(prompts)
    while pending or core.has_work():
        for name in [n for n in pending if arrivals[n] <= step]:
            core.add_request(GenerationRequest(name, pending.pop(name), params))
        for event in core.step():
            assert event.error is None, event.error
            tokens[event.request_id].extend(event.token_ids)
            logprobs[event.request_id].extend(event.logprobs)
            cached[event.request_id] = event.cached_tokens
        step += 1
        assert step < 500, "the engine made no progress"
    return tokens, logprobs, cached


def new_core(paged: PagedLlama, **config: Any) -> EngineCore:
    options: dict[str, Any] = {"num_blocks": 64, "block_size": 16, "max_model_len": 1024}
    options.update(config)
    return EngineCore(paged, EngineConfig(**options), eos_token_ids={2})
