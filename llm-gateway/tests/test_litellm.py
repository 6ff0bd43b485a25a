"""The LiteLLM adapter for real: litellm's ``openai/`` route over HTTP to a live upstream.

The upstream is the scripted OpenAI-compatible server (answers, tools, usage, error statuses,
resets, cut streams on cue) and, in ``test_llamacpp.py``, the llama.cpp server with SmolLM2.
LiteLLM is optional: without it these tests skip.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from genai_factory.gateway.providers import litellm as adapter
from genai_factory.gateway.runtime import Gateway
from genai_factory.gateway.testing import Fault, ScriptedUpstream
from genai_factory.shared.errors import ConfigError, ProviderError
from genai_factory.shared.models import ChatCompletionRequest

from .conftest import GatewayFactory, deployment, fast_timeouts, settings_for
from .test_api import CHAT, sse_events

pytestmark = pytest.mark.integration

needs_litellm = pytest.mark.skipif(
    __import__("importlib.util").util.find_spec("litellm") is None,
    reason="litellm is not installed (pip install genai-factory-llm-gateway[litellm])",
)

TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def litellm_deployment(upstream: ScriptedUpstream, **extra: Any) -> dict[str, Any]:
    return {
        "name": "long-tail",
        "model": "m",
        "provider": "litellm",
        "upstream_model": "openai/served-model",
        "base_url": upstream.url,
        "api_key": "sk-upstream-key",
        # the first call imports litellm (seconds on a busy machine): a roomy total timeout
        "timeouts": fast_timeouts(ttft_s=60, total_s=60, idle_s=5),
        **extra,
    }


@needs_litellm
async def test_an_answer_with_usage_through_litellm(
    upstream: ScriptedUpstream, gateway_client: GatewayFactory
) -> None:
    _, client = await gateway_client(settings_for(litellm_deployment(upstream)))
    response = await client.post("/v1/chat/completions", json=CHAT | {"temperature": 0.5})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "Hello from primary"}
    assert body["choices"][0]["finish_reason"] == "stop"
    # the upstream's own count (its rule: characters // 4 + 1), not one LiteLLM made up
    assert body["usage"]["prompt_tokens"] == len("Hi there") // 4 + 1
    assert body["usage"]["completion_tokens"] == len(["Hello", "from", "primary"])
    assert "provider_specific_fields" not in response.text  # LiteLLM's extras stay inside
    assert response.headers["x-gf-deployment"] == "long-tail"
    sent = upstream.requests[0]
    # litellm stripped its provider prefix; the caller's messages and options went through
    assert sent["model"] == "served-model" and sent["messages"] == CHAT["messages"]
    assert sent["temperature"] == 0.5
    assert upstream.paths == ["/v1/chat/completions"]


@needs_litellm
async def test_a_stream_through_litellm_with_usage(
    upstream: ScriptedUpstream, gateway_client: GatewayFactory
) -> None:
    upstream.default = Fault.ok("one two three four")
    _, client = await gateway_client(settings_for(litellm_deployment(upstream)))
    request = CHAT | {"stream": True, "stream_options": {"include_usage": True}}
    response = await client.post("/v1/chat/completions", json=request)
    assert response.status_code == 200
    events = sse_events(response.content)
    assert events[-1] == "[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "one two three four"
    assert [c["choices"][0].get("finish_reason") for c in chunks if c["choices"]].count("stop") == 1
    usage = [c["usage"] for c in chunks if c.get("usage")]
    assert usage and usage[-1]["completion_tokens"] == 4
    assert upstream.requests[0]["stream"] is True


@needs_litellm
async def test_tools_through_litellm_plain_and_streamed(
    upstream: ScriptedUpstream, gateway_client: GatewayFactory
) -> None:
    _, client = await gateway_client(settings_for(litellm_deployment(upstream)))
    request = CHAT | {"tools": [TOOL], "tool_choice": "required"}
    response = await client.post("/v1/chat/completions", json=request)
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    call = choice["message"]["tool_calls"][0]
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    assert upstream.requests[0]["tools"] == [TOOL]
    streamed = await client.post("/v1/chat/completions", json=request | {"stream": True})
    events = sse_events(streamed.content)
    assert events[-1] == "[DONE]"
    deltas = [orjson.loads(e)["choices"][0] for e in events[:-1]]
    calls = [c for d in deltas for c in d["delta"].get("tool_calls") or ()]
    assert calls[0]["function"]["name"] == "get_weather"
    assert deltas[-1]["finish_reason"] == "tool_calls"


@needs_litellm
@pytest.mark.parametrize(
    ("fault", "status", "message", "code"),
    [
        (Fault.error(429, "slow down", retry_after=7), 429, "slow down", None),
        (Fault.error(500, "the model crashed"), 502, "the model crashed", None),
        (Fault.error(503, "overloaded"), 502, "overloaded", None),
        (Fault.error(401, "bad upstream key"), 502, "bad upstream key", None),
        (Fault.error(404, "no such model here"), 404, "no such model here", None),
        (
            Fault.error(400, "maximum context length is 8192 tokens"),
            400,
            "maximum context length",
            "context_length_exceeded",
        ),
        (
            Fault.error(400, "flagged", code="content_filter"),
            400,
            "flagged",
            "content_filter",
        ),
        (Fault.reset(), 502, "Connection error", None),
    ],
)
async def test_upstream_errors_through_litellm_map_to_our_statuses(
    upstream: ScriptedUpstream,
    gateway_client: GatewayFactory,
    fault: Fault,
    status: int,
    message: str,
    code: str | None,
) -> None:
    upstream.default = fault
    _, client = await gateway_client(
        settings_for(litellm_deployment(upstream), retry={"max_retries": 0})
    )
    response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert message in error["message"] and error["message"].startswith("litellm: ")
    if code is not None:
        assert error["code"] == code
    if status == 429:
        assert response.headers["retry-after"] == "7"
    # LiteLLM's own retries are off: the gateway's failover decides, one attempt here
    assert upstream.served == 1


@needs_litellm
async def test_failover_retries_litellm_errors_and_falls_back(
    upstream: ScriptedUpstream, backup: ScriptedUpstream, gateway_client: GatewayFactory
) -> None:
    upstream.push(Fault.error(500, "once"), Fault.error(503, "twice"))
    _, client = await gateway_client(
        settings_for(
            litellm_deployment(upstream),
            deployment("native", "m", backup),
            retry={"max_retries": 1, "base_delay_s": 0.01, "jitter": 0},
            routing={"strategy": "ordered"},
        )
    )
    response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "Hello from backup"
    assert response.headers["x-gf-attempts"] == "3"  # two on litellm, then the fallback
    assert (upstream.served, backup.served) == (2, 1)


@needs_litellm
async def test_a_litellm_stream_cut_after_the_first_token_ends_with_an_error_event(
    upstream: ScriptedUpstream, gateway_client: GatewayFactory
) -> None:
    upstream.default = Fault.ok("one two three four five", cut_after=2)
    _, client = await gateway_client(settings_for(litellm_deployment(upstream)))
    response = await client.post("/v1/chat/completions", json=CHAT | {"stream": True})
    events = sse_events(response.content)
    assert events[-1] != "[DONE]"
    last = orjson.loads(events[-1])
    assert "error" in last and last["error"]["message"].startswith("litellm: ")
    text = "".join(orjson.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-1])
    assert text == "one two "


@needs_litellm
async def test_a_litellm_stream_failing_before_its_first_token_switches_deployment(
    upstream: ScriptedUpstream, backup: ScriptedUpstream, gateway_client: GatewayFactory
) -> None:
    upstream.default = Fault.error(500, "down")
    _, client = await gateway_client(
        settings_for(
            litellm_deployment(upstream),
            deployment("native", "m", backup),
            retry={"max_retries": 0},
            routing={"strategy": "ordered"},
        )
    )
    response = await client.post("/v1/chat/completions", json=CHAT | {"stream": True})
    events = sse_events(response.content)
    assert events[-1] == "[DONE]"
    assert response.headers["x-gf-deployment"] == "native"
    assert upstream.served == 1


GATEWAY_START = """
import sys
from genai_factory.gateway.app import create_app
from genai_factory.gateway.cli import gateway
from genai_factory.gateway.config import GatewaySettings
from genai_factory.gateway.runtime import Gateway
settings = GatewaySettings.model_validate({"deployments": [{"model": "m", "provider": "litellm",
    "upstream_model": "openai/x", "base_url": "http://127.0.0.1:9/v1"}]})
create_app(Gateway(settings))
print(sorted(name for name in sys.modules if name.split(".")[0] in ("litellm", "openai", "tiktoken")))
"""


@needs_litellm
def test_gateway_start_up_never_imports_litellm() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("TIKTOKEN_CACHE_DIR",)}
    out = subprocess.run(
        [sys.executable, "-c", GATEWAY_START], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_offline_defaults_point_at_files_litellm_ships() -> None:
    wanted = adapter.offline_environment({})
    assert wanted.get("LITELLM_LOCAL_MODEL_COST_MAP", "True") == "True"
    if "TIKTOKEN_CACHE_DIR" in wanted:  # litellm installed: its bundled tiktoken encodings
        folder = Path(wanted["TIKTOKEN_CACHE_DIR"])
        assert folder.is_dir() and len([p for p in folder.iterdir() if p.is_file()]) >= 2
    chosen = {"LITELLM_LOCAL_MODEL_COST_MAP": "False", "TIKTOKEN_CACHE_DIR": "/elsewhere"}
    assert adapter.offline_environment(chosen) == {}  # the operator's choice wins


OFFLINE_IMPORT = """
import asyncio, os
from genai_factory.gateway.providers.litellm import LiteLLMProvider
provider = LiteLLMProvider("openai/x", base_url="http://127.0.0.1:9/v1")
asyncio.run(provider._litellm())
print(os.environ["LITELLM_LOCAL_MODEL_COST_MAP"], os.environ["TIKTOKEN_CACHE_DIR"])
"""


@needs_litellm
def test_the_first_call_sets_the_offline_environment_before_importing_litellm() -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("LITELLM_LOCAL_MODEL_COST_MAP", "TIKTOKEN_CACHE_DIR")
    }
    out = subprocess.run(
        [sys.executable, "-c", OFFLINE_IMPORT], capture_output=True, text=True, env=env, check=True
    )
    flag, folder = out.stdout.split()
    assert flag == "True" and folder.endswith("litellm_core_utils/tokenizers")
    # with the local cost map LiteLLM never tries to download its price list
    assert "model cost map" not in out.stderr, out.stderr


def test_without_litellm_the_gateway_says_what_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = adapter.importlib.util.find_spec
    monkeypatch.setattr(
        adapter.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "litellm" else real(name, *a),
    )
    with pytest.raises(ConfigError, match=r"\[litellm\]"):
        adapter.LiteLLMProvider("mistral/mistral-small")
    with pytest.raises(ConfigError, match="litellm"):
        Gateway(settings_for({"model": "m", "provider": "litellm", "upstream_model": "x/y"}))


@needs_litellm
async def test_a_broken_litellm_install_is_a_clean_upstream_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken() -> None:
        raise ImportError("litellm is half installed")

    monkeypatch.setattr(adapter, "_import_litellm", broken)
    provider = adapter.LiteLLMProvider("openai/x", base_url="http://127.0.0.1:9/v1")
    request = ChatCompletionRequest.model_validate(CHAT)
    with pytest.raises(ProviderError, match="half installed") as caught:
        await provider.complete(request)
    assert caught.value.retryable is False and caught.value.code == "provider_unavailable"


@needs_litellm
async def test_legacy_completions_through_litellm_go_through_its_chat_api(
    upstream: ScriptedUpstream, gateway_client: GatewayFactory
) -> None:
    upstream.default = Fault.ok("once upon a time")
    _, client = await gateway_client(settings_for(litellm_deployment(upstream)))
    prompt = {"model": "m", "prompt": "Tell a story", "max_tokens": 8}
    plain = await client.post("/v1/completions", json=prompt)
    assert plain.status_code == 200, plain.text
    assert plain.json()["choices"][0]["text"] == "once upon a time"
    streamed = await client.post("/v1/completions", json=prompt | {"stream": True})
    events = sse_events(streamed.content)
    assert events[-1] == "[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    assert all(c["object"] == "text_completion" for c in chunks)
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == "once upon a time"
    # LiteLLM has no legacy completions here: both went to the upstream's chat API
    assert upstream.paths == ["/v1/chat/completions"] * 2
    assert upstream.requests[1]["messages"] == [{"role": "user", "content": "Tell a story"}]
