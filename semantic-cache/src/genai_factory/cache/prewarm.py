"""Prewarming: fill the cache from a JSONL log of past requests and answers.

Each line is either the simple form ``{"tenant", "prompt", "response", ...}`` with optional
``namespace``, ``model``, ``prompt_version``, ``cost_usd``, ``latency_ms``, ``tags``, or the
gateway form ``{"tenant", "request": <chat request>, "response": <chat response>}``, which is
keyed exactly as :class:`~genai_factory.cache.response_cache.SemanticResponseCache` keys it.
Prompts are embedded in batches; a malformed line raises ValidationError naming its number.

Example::

    loaded = await prewarm(cache, Path("logs/answers.jsonl"))
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from genai_factory.cache.core import SemanticCache
from genai_factory.cache.entry import CacheEntry, CacheScope, exact_key
from genai_factory.cache.normalize import canonical_json
from genai_factory.cache.response_cache import SemanticResponseCache
from genai_factory.shared.errors import ValidationError
from genai_factory.shared.models import ChatCompletionRequest, ChatCompletionResponse, Principal

__all__ = ["prewarm"]


def _line_entry(
    data: Any, where: str, responses: SemanticResponseCache
) -> tuple[CacheScope, str, str]:
    if not isinstance(data, dict):
        raise ValidationError(f"{where}: each line must be a JSON object", param=where)
    tenant = data.get("tenant")
    if not isinstance(tenant, str) or not tenant:
        raise ValidationError(f"{where}: 'tenant' must be a non-empty string", param=where)
    if "request" in data:
        try:
            request = ChatCompletionRequest.model_validate(data["request"])
            response = ChatCompletionResponse.model_validate(data["response"])
        except Exception as exc:
            raise ValidationError(
                f"{where}: invalid request/response ({exc})", param=where
            ) from None
        scoped = responses.scope_for(request, Principal(subject=tenant, org_id=tenant))
        if scoped is None:
            raise ValidationError(f"{where}: this request is not cacheable", param=where)
        scope, text = scoped
        return scope, text, canonical_json(response.model_dump(mode="json"))
    prompt, answer = data.get("prompt"), data.get("response")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValidationError(f"{where}: 'prompt' must be a non-empty string", param=where)
    if not isinstance(answer, str | dict):
        raise ValidationError(f"{where}: 'response' must be a string or an object", param=where)
    scope = CacheScope(
        tenant=tenant,
        namespace=str(data.get("namespace", "default")),
        model=str(data.get("model", "")),
        prompt_version=str(data.get("prompt_version", "")),
    )
    return scope, prompt, answer if isinstance(answer, str) else canonical_json(answer)


async def prewarm(
    cache: SemanticCache,
    path: Path,
    responses: SemanticResponseCache | None = None,
    batch_size: int = 256,
) -> int:
    """Load every line of ``path`` into ``cache`` (all tiers); returns how many were loaded."""
    responses = responses or SemanticResponseCache(cache=cache)
    try:
        text = await asyncio.to_thread(path.read_text, encoding="utf-8")
        lines = text.splitlines()
    except OSError as exc:
        raise ValidationError(f"cannot read {path}: {exc.strerror}", param=str(path)) from None
    pending: list[tuple[CacheScope, str, str, dict[str, Any]]] = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        where = f"{path}:{number}"
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValidationError(f"{where}: not valid JSON ({exc.msg})", param=where) from None
        scope, prompt, answer = _line_entry(data, where, responses)
        pending.append((scope, prompt, answer, data))
    loaded = 0
    embedder = cache._embedder()
    for start in range(0, len(pending), batch_size):
        batch = pending[start : start + batch_size]
        vectors = embedder.encode([prompt for _, prompt, _, _ in batch]) if cache.semantic else None
        now = time.time()
        for i, (scope, prompt, answer, data) in enumerate(batch):
            entry = CacheEntry(
                key=exact_key(scope, prompt),
                scope=scope,
                prompt=prompt,
                response=answer,
                vector=None if vectors is None else vectors[i],
                embedding_model_id=embedder.model_id if vectors is not None else "",
                created_at=now,
                expires_at=None if cache.ttl_s is None else now + cache.ttl_s,
                cost_usd=float(data.get("cost_usd", 0.0) or 0.0),
                latency_ms=float(data.get("latency_ms", 0.0) or 0.0),
                tags=tuple(str(t) for t in data.get("tags", []) or []),
                last_access=now,
            )
            cache.insert_local([entry])
            await cache._write_shared(entry)
            loaded += 1
    cache.stats.stores += loaded
    return loaded
