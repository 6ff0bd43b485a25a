"""The vLLM adapter: the pure parts everywhere, generation on a real engine where vLLM and CUDA are.

The unit tests drive the adapter with a scripted engine that behaves like vLLM's async engine
(cumulative RequestOutputs, ``abort``); the integration tests at the end run the real vLLM on the
packaged SmolLM2 GGUF and skip, with the reason, on hosts without vLLM or a GPU.
"""

from __future__ import annotations

import asyncio
import math
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genai_factory.serving.engines.vllm import (
    VLLMChatModel,
    import_vllm,
    logprobs_json,
    sampling_kwargs,
)
from genai_factory.serving.registry import resolve_model_path
from genai_factory.shared.contracts import ChatModel
from genai_factory.shared.errors import ConfigError, ServiceUnavailable, ValidationError
from genai_factory.shared.factory import build_component, dump_component
from genai_factory.shared.models import ChatCompletionRequest


def chat(**fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "Say hello."}]} | fields
    )


# --- request -> SamplingParams keyword arguments ------------------------------------------------


def test_sampling_kwargs_maps_every_field() -> None:
    request = chat(
        temperature=0.7,
        top_p=0.9,
        max_tokens=40,
        stop=["END", "###"],
        seed=7,
        n=3,
        logprobs=True,
        top_logprobs=2,
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        logit_bias={"42": -100.0},
    )
    assert sampling_kwargs(request, default_max_tokens=256, seed=0) == {
        "n": 3,
        "max_tokens": 40,
        "temperature": 0.7,
        "top_p": 0.9,
        "stop": ["END", "###"],
        "seed": 7,
        "presence_penalty": 0.5,
        "frequency_penalty": -0.5,
        "logprobs": 2,
        "logit_bias": {42: -100.0},
    }


def test_sampling_kwargs_defaults() -> None:
    kwargs = sampling_kwargs(chat(), default_max_tokens=99, seed=5)
    assert kwargs == {"n": 1, "max_tokens": 99, "seed": 5}
    assert "seed" not in sampling_kwargs(chat(), default_max_tokens=99)
    # max_completion_tokens wins over max_tokens; logprobs alone asks for the sampled token only
    kwargs = sampling_kwargs(
        chat(max_tokens=50, max_completion_tokens=20, logprobs=True), default_max_tokens=99
    )
    assert kwargs["max_tokens"] == 20
    assert kwargs["logprobs"] == 0


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        (
            {
                "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
                "tool_choice": "auto",
            },
            "tools",
        ),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"logit_bias": {"hello": 1.0}}, "logit_bias"),
    ],
)
def test_sampling_kwargs_refuses_what_it_cannot_do(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(ValidationError) as caught:
        sampling_kwargs(chat(**fields), default_max_tokens=16)
    assert caught.value.param == param
    assert caught.value.status == 400


@settings(max_examples=60, deadline=None)
@given(
    temperature=st.none() | st.floats(0, 2),
    top_p=st.none() | st.floats(0, 1),
    max_tokens=st.none() | st.integers(1, 10_000),
    stop=st.none() | st.text(min_size=1, max_size=5) | st.lists(st.text(min_size=1), max_size=4),
    seed=st.none() | st.integers(-(2**31), 2**31),
    n=st.integers(1, 8),
    top=st.none() | st.integers(0, 20),
)
def test_sampling_kwargs_property(
    temperature: float | None,
    top_p: float | None,
    max_tokens: int | None,
    stop: str | list[str] | None,
    seed: int | None,
    n: int,
    top: int | None,
) -> None:
    request = chat(
        temperature=temperature,
        top_p=top_p,
        max_tokens=max_tokens,
        stop=stop,
        seed=seed,
        n=n,
        logprobs=top is not None,
        top_logprobs=top,
    )
    kwargs = sampling_kwargs(request, default_max_tokens=128, seed=3)
    assert kwargs["n"] == n
    assert kwargs["max_tokens"] == (max_tokens or 128)
    assert kwargs.get("temperature") == temperature
    assert kwargs.get("top_p") == top_p
    assert kwargs["seed"] == (seed if seed is not None else 3)
    expected_stop = [stop] if isinstance(stop, str) else stop
    assert kwargs.get("stop") == expected_stop
    assert kwargs.get("logprobs") == (top or 0 if top is not None else None)


# --- log-probabilities ---------------------------------------------------------------------------


@dataclass
class Logprob:  # the fields of vllm.sequence.Logprob the adapter reads
    logprob: float
    rank: int | None
    decoded_token: str | None


def test_logprobs_json_openai_shape() -> None:
    positions = [
        {5: Logprob(-0.1, 1, "Hi"), 6: Logprob(-2.5, 2, "Hey")},
        # the sampled token (9) was not among the top ones: rank 3, listed after them
        {9: Logprob(-3.0, 3, "!"), 7: Logprob(-0.2, 1, "."), 8: Logprob(-1.9, 2, None)},
        None,  # a position without log-probs is skipped
    ]
    result = logprobs_json([5, 9, 4], positions, top=2)
    assert [item["token"] for item in result["content"]] == ["Hi", "!"]
    first, second = result["content"]
    assert first["logprob"] == pytest.approx(-0.1)
    assert first["bytes"] == list(b"Hi")
    assert [t["token"] for t in first["top_logprobs"]] == ["Hi", "Hey"]
    assert [t["token"] for t in second["top_logprobs"]] == [".", ""]
    assert logprobs_json([5], positions[:1], top=0)["content"][0]["top_logprobs"] == []


# --- vLLM missing --------------------------------------------------------------------------------


def test_missing_vllm_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` fail on any host
    with pytest.raises(ConfigError) as caught:
        import_vllm()
    assert caught.value.code == "vllm_not_installed"
    assert "[gpu]" in str(caught.value)
    model = VLLMChatModel("smollm2")  # building it needs no vllm: config stays valid
    with pytest.raises(ConfigError):
        model.load()
    with pytest.raises(ConfigError):
        asyncio.run(model.complete(chat()))
    assert not model.loaded


# --- config round trip ---------------------------------------------------------------------------


def test_to_params_round_trip() -> None:
    model = VLLMChatModel(
        "/models/qwen",
        tokenizer="/models/qwen-tok",
        max_model_len=4096,
        gpu_memory_utilization=0.3,
        dtype="float16",
        quantization="awq",
        seed=None,
        default_max_tokens=64,
        engine_options={"enforce_eager": True},
    )
    spec = dump_component(model)
    assert spec["type"] == "genai_factory.serving.engines.vllm:VLLMChatModel"
    rebuilt = build_component(spec, ChatModel)
    assert isinstance(rebuilt, VLLMChatModel)
    assert rebuilt.to_params() == model.to_params()
    assert rebuilt.engine_args() == {
        "model": "/models/qwen",
        "tokenizer": "/models/qwen-tok",
        "max_model_len": 4096,
        "gpu_memory_utilization": 0.3,
        "dtype": "float16",
        "seed": 0,
        "quantization": "awq",
        "enforce_eager": True,
    }


def test_packaged_model_resolves_to_its_gguf() -> None:
    args = VLLMChatModel("smollm2").engine_args()
    assert args["model"] == str(resolve_model_path("smollm2"))
    assert "quantization" not in args and "tokenizer" not in args


@pytest.mark.parametrize(
    "params",
    [{"max_model_len": 10}, {"gpu_memory_utilization": 0.0}, {"default_max_tokens": 0}],
)
def test_bad_params_refused(params: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must be"):
        VLLMChatModel(**params)


# --- the adapter over a scripted engine ----------------------------------------------------------


class WordTokenizer:
    """One token per word; a ChatML-like template."""

    def apply_chat_template(
        self, messages: list[dict[str, str]], tokenize: bool, add_generation_prompt: bool
    ) -> str:
        assert tokenize is False and add_generation_prompt is True
        body = " ".join(f"<{m['role']}> {m['content']}" for m in messages)
        return body + " <assistant>"

    def encode(self, text: str, add_special_tokens: bool) -> list[int]:
        assert add_special_tokens is False
        return [len(word) for word in text.split()]


@dataclass
class Completion:
    index: int
    text: str
    token_ids: list[int]
    finish_reason: str | None
    logprobs: list[dict[int, Logprob]] | None


@dataclass
class Output:
    prompt_token_ids: list[int]
    outputs: list[Completion]
    finished: bool


@dataclass
class ScriptedEngine:
    """Answers every request with ``words`` for each of its ``n`` choices, one word a step."""

    words: list[str]
    fail_with: Exception | None = None
    started: list[str] = field(default_factory=list)
    aborted: list[str] = field(default_factory=list)
    generated: int = 0
    shut_down: bool = False

    async def get_tokenizer(self) -> WordTokenizer:
        return WordTokenizer()

    async def generate(
        self, prompt: dict[str, list[int]], params: dict[str, Any], request_id: str
    ) -> AsyncIterator[Output]:
        self.started.append(request_id)
        if self.fail_with is not None:
            raise self.fail_with
        limit = min(len(self.words), params["max_tokens"])
        for step in range(1, limit + 1):
            await asyncio.sleep(0)
            self.generated += 1
            done = step == limit
            reason = ("stop" if limit == len(self.words) else "length") if done else None
            outputs = [
                Completion(
                    index=i,
                    text=" ".join(self.words[:step]),
                    token_ids=list(range(step)),
                    finish_reason=reason,
                    logprobs=[{t: Logprob(-0.5, 1, f"w{t}")} for t in range(step)]
                    if params.get("logprobs") is not None
                    else None,
                )
                for i in range(params["n"])
            ]
            yield Output(prompt["prompt_token_ids"], outputs, done)

    async def abort(self, request_id: str) -> None:
        self.aborted.append(request_id)

    def shutdown(self) -> None:
        self.shut_down = True


def scripted(words: list[str], **params: Any) -> tuple[VLLMChatModel, ScriptedEngine]:
    model = VLLMChatModel("/models/any", **params)
    engine = ScriptedEngine(words)
    model.use_engine(engine, sampling_params=dict)
    return model, engine


async def test_complete_over_scripted_engine() -> None:
    model, engine = scripted(["Hello", "there", "friend"])
    assert isinstance(model, ChatModel)
    answer = await model.complete(chat(n=2, logprobs=True, top_logprobs=1))
    assert [c.message.text() for c in answer.choices] == ["Hello there friend"] * 2
    assert {c.finish_reason for c in answer.choices} == {"stop"}
    assert answer.usage is not None
    # prompt "<user> Say hello. <assistant>": four words
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (4, 6)
    logprobs = answer.choices[0].logprobs
    assert logprobs is not None and len(logprobs["content"]) == 3
    assert engine.aborted == []  # finished requests are not aborted

    answer = await model.complete(chat(max_tokens=2))
    assert answer.choices[0].finish_reason == "length"
    assert answer.choices[0].logprobs is None


async def test_stream_deltas_usage_and_roles() -> None:
    model, _ = scripted(["a", "b", "c"])
    request = chat(n=2, stream=True, stream_options={"include_usage": True}, logprobs=True)
    chunks = [chunk async for chunk in model.stream(request)]
    *content, usage_chunk = chunks
    for index in (0, 1):
        mine = [c.choices[0] for c in content if c.choices[0].index == index]
        assert "".join(c.delta.content or "" for c in mine) == "a b c"
        assert mine[0].delta.role == "assistant"
        assert all(c.delta.role is None for c in mine[1:])
        assert [c.finish_reason for c in mine][-1] == "stop"
        assert sum(len((c.logprobs or {})["content"]) for c in mine) == 3
    assert usage_chunk.choices == []
    assert usage_chunk.usage is not None and usage_chunk.usage.completion_tokens == 6
    assert len({c.id for c in chunks}) == 1


async def test_closing_the_stream_aborts_the_request() -> None:
    model, engine = scripted([f"w{i}" for i in range(50)], default_max_tokens=50)
    stream = model.stream(chat())
    first = await anext(stream)
    assert first.choices[0].delta.content == "w0"
    await stream.aclose()  # type: ignore[attr-defined]
    assert engine.aborted == engine.started
    assert engine.generated < 50
    assert model.stats() == {"batch_size": 0.0}


async def test_engine_errors_become_typed_errors() -> None:
    model, engine = scripted(["x"])
    engine.fail_with = ValueError("prompt too long")
    with pytest.raises(ValidationError):
        await model.complete(chat())
    engine.fail_with = RuntimeError("CUDA error")
    with pytest.raises(ServiceUnavailable):
        await model.complete(chat())
    assert engine.aborted == engine.started


async def test_prompt_checks() -> None:
    model, engine = scripted(["x"], max_model_len=64)
    with pytest.raises(ValidationError) as caught:
        await model.complete(chat(max_tokens=62))
    assert caught.value.code == "context_length_exceeded"
    image = [{"type": "image_url", "image_url": {"url": "http://127.0.0.1/x.png"}}]
    with pytest.raises(ValidationError) as caught:
        await model.complete(chat(messages=[{"role": "user", "content": image}]))
    assert caught.value.code == "unsupported_content"
    assert engine.started == []  # refused before reaching the engine


def test_close_shuts_the_engine_down() -> None:
    model, engine = scripted(["x"])
    assert model.loaded
    model.close()
    assert engine.shut_down and not model.loaded


# --- the real vLLM (GPU hosts) -------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_model() -> Any:
    pytest.importorskip("vllm", reason="vLLM is not installed (the gpu extra)")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("vLLM needs a CUDA GPU; none is available here")
    model = VLLMChatModel("smollm2", max_model_len=1024, gpu_memory_utilization=0.3)
    model.load()
    yield model
    model.close()


@pytest.mark.slow
async def test_real_vllm_complete_and_stream(real_model: VLLMChatModel) -> None:
    request = chat(temperature=0, max_tokens=16, logprobs=True, top_logprobs=2)
    answer = await real_model.complete(request)
    text = answer.text()
    assert text.strip()
    assert answer.usage is not None and 0 < answer.usage.completion_tokens <= 16
    logprobs = answer.choices[0].logprobs
    assert logprobs is not None
    assert all(
        item["logprob"] <= 0 and not math.isnan(item["logprob"]) for item in logprobs["content"]
    )
    streamed = [c async for c in real_model.stream(chat(temperature=0, max_tokens=16))]
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == text


@pytest.mark.slow
async def test_real_vllm_close_stream_aborts(real_model: VLLMChatModel) -> None:
    stream = real_model.stream(chat(max_tokens=512, temperature=1.0, seed=1))
    await anext(stream)
    await stream.aclose()  # type: ignore[attr-defined]
    assert real_model.stats()["batch_size"] == 0.0
    # the engine is free for the next request
    answer = await real_model.complete(chat(max_tokens=4, n=2, stop=["\n"]))
    assert len(answer.choices) == 2
