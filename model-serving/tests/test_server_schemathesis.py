"""Schemathesis over the app's own OpenAPI, in process, with the real llama.cpp engine behind it:
whatever valid or invalid request it generates, the server never answers 5xx.

Examples are bounded so the tiny model stays fast: the server caps answers at 4 tokens, and a
generated chat or completions request names the served model in half of the cases with its
texts cut short (the other half keeps its generated model name, which exercises the 404 path).
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from genai_factory.serving.server import ServerParts, create_app

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _shorten(value: Any) -> Any:
    return value[:24] if isinstance(value, str) else value


def bound(body: Any) -> Any:
    """Half of the chat/completions bodies get the served model, a short valid conversation, a
    token cap the server accepts and n of 1 or 2, so that many of them reach the engine."""
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        return body
    if zlib.crc32(repr(sorted(body.items(), key=str)).encode()) % 2:
        return body
    body = {**body, "model": "smollm2"}
    for cap in ("max_tokens", "max_completion_tokens"):
        if isinstance(body.get(cap), int) and not isinstance(body[cap], bool):
            body[cap] = max(-1, min(body[cap], 4))  # keeps 0 and -1: they must be 400
    if isinstance(body.get("n"), int):
        body["n"] = min(body["n"], 2)
    body.pop("logprobs", None)
    messages = body.get("messages")
    if isinstance(messages, list):
        # a valid conversation (the other half of the cases fuzzes messages themselves)
        texts = [m.get("content") if isinstance(m, dict) else None for m in messages[:2]]
        body["messages"] = [
            {"role": "user", "content": _shorten(t) if isinstance(t, str) else "Hi"}
            for t in texts or [None]
        ]
    prompt = body.get("prompt")
    if isinstance(prompt, list):
        body["prompt"] = [_shorten(p) for p in prompt[:2]]
    elif isinstance(prompt, str):
        body["prompt"] = _shorten(prompt)
    return body


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_request_makes_the_server_fail(
    make_parts: Callable[..., ServerParts], mode: GenerationMode
) -> None:
    parts = make_parts(model={"max_output_tokens": 4})
    asyncio.run(parts.start())  # schemathesis runs the lifespan too; starting twice is harmless
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(parts=parts))
    seen: set[tuple[str, int]] = set()

    @settings(
        max_examples=150,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=schema.as_strategy(mode))
    def check(case: Any) -> None:
        if case.path in ("/v1/chat/completions", "/v1/completions"):
            case.body = bound(case.body)
        response = case.call()
        case.validate_response(response, checks=[not_a_server_error])
        seen.add((case.path, response.status_code))
        if response.status_code >= 400 and response.status_code != 499:
            # every refusal speaks OpenAI's error JSON
            assert {"message", "type", "param", "code"} <= set(response.json()["error"])

    check()
    # the run reached the engine and the error paths, not only the validators
    statuses = {status for _, status in seen}
    assert 400 in statuses or 404 in statuses
    if mode is GenerationMode.POSITIVE:
        assert ("/v1/chat/completions", 200) in seen
