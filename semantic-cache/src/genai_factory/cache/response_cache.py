"""The shared ``ResponseCache`` contract on top of :class:`~genai_factory.cache.core.SemanticCache`.

What keys an answer (:meth:`SemanticResponseCache.scope_for`):

- the principal's tenant (org, else subject); no principal means the ``anonymous`` tenant;
- the model, the namespace and prompt version (``metadata.cache_namespace`` /
  ``metadata.prompt_version`` on the request), the system/developer messages, the tools and
  tool choice, every sampling setting and any other provider option;
- for multi-turn chats: the last user turn is the text compared semantically, and a hash of
  every earlier turn is part of the scope, so only conversations with the same history match.

By default nothing sampled (temperature > 0; an unset temperature counts as the provider's
default of 1.0) and nothing involving tools is read or written: ``cache_sampled`` and
``cache_tool_requests`` switch that on.

Example:
    >>> from genai_factory.cache.response_cache import SemanticResponseCache
    >>> from genai_factory.shared.models import ChatCompletionRequest, Principal
    >>> cache = SemanticResponseCache()
    >>> req = ChatCompletionRequest(model="smollm2", temperature=0,
    ...                             messages=[{"role": "user", "content": "Hi"}])
    >>> scope, text = cache.scope_for(req, Principal(subject="k1", org_id="acme"))
    >>> scope.tenant, text
    ('acme', 'Hi')
    >>> cache.scope_for(req.model_copy(update={"temperature": 0.7}), None) is None
    True
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any

from genai_factory.cache.core import SemanticCache
from genai_factory.cache.entry import CacheScope, exact_key
from genai_factory.cache.normalize import canonical_json, stable_hash
from genai_factory.shared.models import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatMessage,
    Principal,
    new_id,
)

__all__ = ["ANONYMOUS_TENANT", "SemanticResponseCache"]

ANONYMOUS_TENANT = "anonymous"

# request fields that change what a model answers (besides messages and tools)
_SAMPLING_FIELDS = (
    "n",
    "stop",
    "max_tokens",
    "max_completion_tokens",
    "top_p",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "seed",
    "response_format",
)
# request fields that do not change the answer
_IGNORED_EXTRAS = frozenset({"metadata", "user", "stream", "stream_options", "store"})
_UNCACHEABLE_FINISH = frozenset({"content_filter", "error"})


class SemanticResponseCache:
    """``ResponseCache`` for the gateway: scope from request + principal, then the engine.

    ``usd_per_1k_input_tokens`` / ``usd_per_1k_output_tokens`` price an answer from its usage
    (for admission and money saved); latency is measured between the miss and the ``put``.
    """

    def __init__(
        self,
        cache: SemanticCache | None = None,
        namespace: str = "default",
        cache_sampled: bool = False,
        cache_tool_requests: bool = False,
        unset_temperature: float = 1.0,
        usd_per_1k_input_tokens: float = 0.0,
        usd_per_1k_output_tokens: float = 0.0,
    ) -> None:
        self.cache = SemanticCache() if cache is None else cache
        self.namespace = namespace
        self.cache_sampled = cache_sampled
        self.cache_tool_requests = cache_tool_requests
        self.unset_temperature = unset_temperature
        self.usd_per_1k_input_tokens = usd_per_1k_input_tokens
        self.usd_per_1k_output_tokens = usd_per_1k_output_tokens
        self._pending: OrderedDict[str, float] = OrderedDict()

    # ------------------------------------------------------------------ scope

    def scope_for(
        self, request: ChatCompletionRequest, principal: Principal | None
    ) -> tuple[CacheScope, str] | None:
        """(scope, text to compare) or None when the request must bypass the cache."""
        temperature = self.unset_temperature if request.temperature is None else request.temperature
        if temperature > 0 and not self.cache_sampled:
            return None
        uses_tools = bool(request.tools) and request.tool_choice != "none"
        tool_turns = any(m.role in ("tool", "function") or m.tool_calls for m in request.messages)
        if (uses_tools or tool_turns) and not self.cache_tool_requests:
            return None
        last_user = max(
            (i for i, m in enumerate(request.messages) if m.role == "user"), default=None
        )
        if last_user is None:
            return None
        turn = request.messages[last_user]
        text = turn.text()
        if not text.strip():
            return None
        system = [m for m in request.messages if m.role in ("system", "developer")]
        context = [
            m
            for i, m in enumerate(request.messages)
            if i != last_user and m.role not in ("system", "developer")
        ]
        # non-text parts of the compared turn (images, audio) belong to the exact context
        extra_parts = (
            [p.model_dump(mode="json") for p in turn.content if p.type != "text"]
            if isinstance(turn.content, list)
            else []
        )
        metadata = request.model_extra.get("metadata") if request.model_extra else None
        metadata = metadata if isinstance(metadata, dict) else {}
        sampling: dict[str, Any] = {"temperature": temperature}
        sampling.update({name: getattr(request, name) for name in _SAMPLING_FIELDS})
        sampling["response_format"] = (
            request.response_format.model_dump(mode="json", by_alias=True)
            if request.response_format
            else None
        )
        sampling["extra"] = {
            k: v for k, v in (request.model_extra or {}).items() if k not in _IGNORED_EXTRAS
        }
        scope = CacheScope(
            tenant=principal.tenant if principal is not None else ANONYMOUS_TENANT,
            namespace=str(metadata.get("cache_namespace", self.namespace)),
            model=request.model,
            prompt_version=str(metadata.get("prompt_version", "")),
            system_hash=_hash_messages(system),
            tools_hash=stable_hash(
                canonical_json(
                    {
                        "tools": [t.model_dump(mode="json") for t in request.tools or []],
                        "choice": request.tool_choice
                        if isinstance(request.tool_choice, str | None)
                        else request.tool_choice.model_dump(mode="json"),
                        "parallel": request.parallel_tool_calls,
                    }
                )
            ),
            sampling_hash=stable_hash(canonical_json(sampling)),
            context_hash=stable_hash(
                _hash_messages(context), canonical_json(extra_parts), str(last_user)
            ),
        )
        return scope, text

    # ------------------------------------------------------------------ contract

    async def get(
        self, request: ChatCompletionRequest, principal: Principal | None
    ) -> ChatCompletionResponse | None:
        scoped = self.scope_for(request, principal)
        if scoped is None:
            return None
        scope, text = scoped
        result = await self.cache.lookup(scope, text)
        if result.entry is None:
            self._pending[exact_key(scope, text)] = time.perf_counter()
            while len(self._pending) > 10_000:
                self._pending.popitem(last=False)
            return None
        response = ChatCompletionResponse.model_validate_json(result.entry.response)
        return response.model_copy(
            update={
                "id": new_id("chatcmpl"),
                "created": int(time.time()),
                "x_gf_cache": {
                    "hit": result.kind,
                    "key": result.entry.key,
                    "similarity": result.similarity,
                    "sampled": result.sampled,
                },
            }
        )

    async def put(
        self,
        request: ChatCompletionRequest,
        response: ChatCompletionResponse,
        principal: Principal | None,
    ) -> None:
        scoped = self.scope_for(request, principal)
        if scoped is None or not response.choices:
            return
        if any(c.finish_reason in _UNCACHEABLE_FINISH for c in response.choices):
            return
        if not self.cache_tool_requests and any(c.message.tool_calls for c in response.choices):
            return
        scope, text = scoped
        started = self._pending.pop(exact_key(scope, text), None)
        latency_ms = (time.perf_counter() - started) * 1000 if started is not None else 0.0
        usage = response.usage
        cost = 0.0
        if usage is not None:
            cost = (
                usage.prompt_tokens * self.usd_per_1k_input_tokens
                + usage.completion_tokens * self.usd_per_1k_output_tokens
            ) / 1000
        metadata = request.model_extra.get("metadata") if request.model_extra else None
        tags = metadata.get("cache_tags", []) if isinstance(metadata, dict) else []
        stored = response.model_dump(mode="json", exclude={"x_gf_cache"})
        await self.cache.store(
            scope,
            text,
            canonical_json(stored),
            cost_usd=cost,
            latency_ms=latency_ms,
            tags=[str(t) for t in tags] if isinstance(tags, list) else [],
            answer_text=response.text(),
        )


def _hash_messages(messages: list[ChatMessage]) -> str:
    return stable_hash(
        canonical_json([m.model_dump(mode="json", exclude_none=True) for m in messages])
    )
