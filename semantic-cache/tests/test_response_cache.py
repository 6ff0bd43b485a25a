"""The shared ResponseCache contract: built from config, scoped by tenant and settings, multi-turn."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genai_factory.cache.core import SemanticCache
from genai_factory.cache.embedding import MiniLMEmbedder
from genai_factory.cache.response_cache import SemanticResponseCache
from genai_factory.shared.contracts import ResponseCache
from genai_factory.shared.factory import build_component, dump_component
from genai_factory.shared.models import ChatCompletionRequest, ChatCompletionResponse, Principal

ACME = Principal(subject="key-1", org_id="acme")
GLOBEX = Principal(subject="key-2", org_id="globex")


def request(text: str, **extra: Any) -> ChatCompletionRequest:
    body: dict[str, Any] = {
        "model": "smollm2",
        "temperature": 0,
        "messages": [{"role": "user", "content": text}],
    }
    body.update(extra)
    return ChatCompletionRequest.model_validate(body)


def answer(text: str, **choice: Any) -> ChatCompletionResponse:
    message = {"role": "assistant", "content": text}
    return ChatCompletionResponse.model_validate(
        {
            "model": "smollm2",
            "choices": [{"index": 0, "message": message, "finish_reason": "stop", **choice}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 50},
        }
    )


@pytest.fixture
def responses(embedder: MiniLMEmbedder) -> SemanticResponseCache:
    return SemanticResponseCache(
        cache=SemanticCache(embedder=embedder), usd_per_1k_input_tokens=0.01
    )


def test_built_from_config_by_the_shared_factory() -> None:
    spec = {
        "type": "genai_factory.cache.response_cache:SemanticResponseCache",
        "params": {
            "namespace": "support",
            "cache": {
                "type": "genai_factory.cache.core:SemanticCache",
                "params": {
                    "ttl_s": 3600,
                    "thresholds": {
                        "type": "genai_factory.cache.policy:ThresholdPolicy",
                        "params": {"default": 0.9, "per_namespace": {"legal": 0.97}},
                    },
                    "l1": {
                        "type": "genai_factory.cache.tiers.memory:MemoryStore",
                        "params": {"max_entries": 500, "eviction": "cost"},
                    },
                    "l3": {
                        "type": "genai_factory.cache.tiers.sql:SQLiteStore",
                        "params": {"path": ":memory:"},
                    },
                },
            },
        },
    }
    component = build_component(spec, ResponseCache)
    assert isinstance(component, SemanticResponseCache)
    assert component.cache.thresholds.for_namespace("legal") == 0.97
    assert component.cache.l1.eviction == "cost"
    dumped = dump_component(component)
    assert dumped["params"]["cache"]["params"]["l1"]["params"]["max_entries"] == 500
    assert isinstance(build_component(dumped, ResponseCache), SemanticResponseCache)


async def test_put_then_get_exact_and_semantic(responses: SemanticResponseCache) -> None:
    assert await responses.get(request("How do I reset my password?"), ACME) is None
    await responses.put(request("How do I reset my password?"), answer("Use the link."), ACME)
    exact = await responses.get(request("how do I reset my password"), ACME)
    assert exact is not None and exact.text() == "Use the link."
    assert exact.model_extra is not None and exact.model_extra["x_gf_cache"]["hit"] == "exact"
    near = await responses.get(request("How can I reset my password?"), ACME)
    assert near is not None and near.model_extra is not None
    assert near.model_extra["x_gf_cache"]["hit"] == "semantic"
    assert near.id != exact.id  # every served answer gets its own id
    stats = responses.cache.info()
    assert stats["saved_usd"] == pytest.approx(2 * 0.001)
    assert stats["saved_ms"] > 0  # latency measured between the miss and the put


async def test_never_across_tenants(responses: SemanticResponseCache) -> None:
    await responses.put(request("What is our discount code?"), answer("ACME-50"), ACME)
    assert await responses.get(request("What is our discount code?"), GLOBEX) is None
    assert await responses.get(request("What is our discount code?"), None) is None
    assert await responses.get(request("What is our discount code?"), ACME) is not None


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    tenants=st.lists(
        st.from_regex(r"[a-z]{1,8}", fullmatch=True), min_size=2, max_size=2, unique=True
    ),
    prompt=st.text(
        alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=60
    ),
)
async def test_property_no_entry_is_ever_served_to_another_tenant(
    embedder: MiniLMEmbedder, tenants: list[str], prompt: str
) -> None:
    if not prompt.strip():
        prompt = "x" + prompt
    responses = SemanticResponseCache(cache=SemanticCache(embedder=embedder))
    owner, other = (Principal(subject=t, org_id=t) for t in tenants)
    await responses.put(request(prompt), answer("secret of " + tenants[0]), owner)
    assert await responses.get(request(prompt), other) is None
    assert await responses.get(request(prompt), owner) is not None


async def test_sampled_and_tool_requests_bypass_unless_configured(embedder: MiniLMEmbedder) -> None:
    strict = SemanticResponseCache(cache=SemanticCache(embedder=embedder))
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    sampled = request("Tell me a joke", temperature=0.8)
    unset = request("Tell me a joke", temperature=None)
    with_tools = request("Weather in Paris?", tools=[tool])
    for req in (sampled, unset, with_tools):
        await strict.put(req, answer("..."), ACME)
        assert await strict.get(req, ACME) is None
    assert strict.cache.stats.stores == 0

    lenient = SemanticResponseCache(
        cache=SemanticCache(embedder=embedder), cache_sampled=True, cache_tool_requests=True
    )
    for req in (sampled, with_tools):
        await lenient.put(req, answer("..."), ACME)
        assert await lenient.get(req, ACME) is not None


async def test_settings_that_change_the_answer_are_part_of_the_key(
    responses: SemanticResponseCache,
) -> None:
    base = request("Write a haiku about the sea")
    await responses.put(base, answer("waves"), ACME)
    variants = [
        request("Write a haiku about the sea", max_tokens=5),
        request("Write a haiku about the sea", seed=7),
        request("Write a haiku about the sea", model="other"),
        request("Write a haiku about the sea", response_format={"type": "json_object"}),
        request("Write a haiku about the sea", metadata={"prompt_version": "v2"}),
        request("Write a haiku about the sea", metadata={"cache_namespace": "poems"}),
        request("Write a haiku about the sea", reasoning_effort="high"),
        ChatCompletionRequest.model_validate(
            {
                "model": "smollm2",
                "temperature": 0,
                "messages": [
                    {"role": "system", "content": "Answer like a pirate."},
                    {"role": "user", "content": "Write a haiku about the sea"},
                ],
            }
        ),
    ]
    for variant in variants:
        assert await responses.get(variant, ACME) is None, variant
    # what does not change the answer is not part of the key
    assert await responses.get(request("Write a haiku about the sea", user="bob"), ACME)


async def test_multi_turn_keys_on_the_last_user_turn_and_the_history(
    responses: SemanticResponseCache,
) -> None:
    def chat(history: list[tuple[str, str]], last: str) -> ChatCompletionRequest:
        messages = [{"role": r, "content": c} for r, c in history]
        messages.append({"role": "user", "content": last})
        return ChatCompletionRequest(model="smollm2", temperature=0, messages=messages)  # type: ignore[arg-type]

    about_python = [("user", "Tell me about Python."), ("assistant", "A language.")]
    about_snakes = [("user", "Tell me about pythons."), ("assistant", "A snake.")]
    await responses.put(chat(about_python, "How long do they live?"), answer("N/A"), ACME)
    assert await responses.get(chat(about_python, "How long do they live"), ACME) is not None
    assert await responses.get(chat(about_snakes, "How long do they live?"), ACME) is None
    assert await responses.get(chat([], "How long do they live?"), ACME) is None


async def test_what_is_not_stored(responses: SemanticResponseCache) -> None:
    filtered = answer("", finish_reason="content_filter")
    await responses.put(request("Something risky"), filtered, ACME)
    empty = ChatCompletionResponse(model="smollm2", choices=[])
    await responses.put(request("Nothing came back"), empty, ACME)
    calls = ChatCompletionResponse.model_validate(
        {
            "model": "smollm2",
            "choices": [
                {
                    "message": {
                        "role": "assistant",
                        "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": "{}"}}],
                    },
                    "finish_reason": "tool_calls",
                }
            ],
        }
    )
    await responses.put(request("Call a tool"), calls, ACME)
    assert responses.cache.stats.stores == 0
    only_assistant = ChatCompletionRequest(
        model="smollm2",
        temperature=0,
        messages=[{"role": "system", "content": "hi"}],  # type: ignore[list-item]
    )
    assert responses.scope_for(only_assistant, ACME) is None
    assert responses.scope_for(request("   "), ACME) is None
