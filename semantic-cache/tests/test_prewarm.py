"""Prewarming from a JSONL log: both line forms, batch embedding, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from genai_factory.cache.core import SemanticCache
from genai_factory.cache.embedding import MiniLMEmbedder
from genai_factory.cache.prewarm import prewarm
from genai_factory.cache.response_cache import SemanticResponseCache
from genai_factory.shared.errors import ValidationError
from genai_factory.shared.models import ChatCompletionRequest, Principal


async def test_prewarmed_answers_are_served(embedder: MiniLMEmbedder, tmp_path: Path) -> None:
    request = {
        "model": "smollm2",
        "temperature": 0,
        "messages": [{"role": "user", "content": "Where is my order?"}],
    }
    response = {
        "model": "smollm2",
        "choices": [{"message": {"role": "assistant", "content": "On its way."}}],
    }
    lines = [
        {
            "tenant": "acme",
            "prompt": "What are your opening hours?",
            "response": "9-5",
            "cost_usd": 0.01,
        },
        {"tenant": "acme", "request": request, "response": response, "tags": ["orders"]},
        {"tenant": "acme", "prompt": "Structured", "response": {"answer": 1}},
    ]
    log = tmp_path / "log.jsonl"
    log.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    cache = SemanticCache(embedder=embedder)
    responses = SemanticResponseCache(cache=cache)
    assert await prewarm(cache, log, responses) == 3
    served = await responses.get(
        ChatCompletionRequest.model_validate(request), Principal(subject="acme", org_id="acme")
    )
    assert served is not None and served.text() == "On its way."
    assert (
        await responses.get(
            ChatCompletionRequest.model_validate(request), Principal(subject="x", org_id="globex")
        )
        is None
    )


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("nope", "not valid JSON"),
        ("[]", "JSON object"),
        ('{"prompt": "p", "response": "r"}', "'tenant'"),
        ('{"tenant": "t", "response": "r"}', "'prompt'"),
        ('{"tenant": "t", "prompt": "p", "response": 3}', "'response'"),
        ('{"tenant": "t", "request": {"model": "m"}, "response": {}}', "invalid request"),
        (
            '{"tenant": "t", "request": {"model": "m", "messages": [{"role": "user", "content": "x"}]},'
            ' "response": {"model": "m", "choices": []}}',
            "not cacheable",
        ),
    ],
)
async def test_bad_lines_name_their_number(tmp_path: Path, line: str, message: str) -> None:
    log = tmp_path / "log.jsonl"
    log.write_text(line + "\n")
    with pytest.raises(ValidationError, match=message) as caught:
        await prewarm(SemanticCache(semantic=False), log)
    assert "log.jsonl:1" in str(caught.value)
    with pytest.raises(ValidationError, match="cannot read"):
        await prewarm(SemanticCache(semantic=False), tmp_path / "missing.jsonl")
