"""An exact-match response cache in memory, scoped per tenant (the ResponseCache contract).

Only deterministic requests are cached: ``temperature`` 0, one choice, no tools. The key is a
SHA-256 of the tenant and the request's canonical JSON (the stream flag and ``user`` left out),
so two tenants never share an answer and key order never matters. Entries expire after
``ttl_s`` and the least recently used go first beyond ``max_entries``.

Example:
    >>> import asyncio
    >>> from genai_factory.shared.models import ChatCompletionRequest, ChatCompletionResponse
    >>> cache = ExactMatchCache(max_entries=10)
    >>> request = ChatCompletionRequest(model="m", temperature=0,
    ...     messages=[{"role": "user", "content": "2+2?"}])
    >>> answer = ChatCompletionResponse(model="m", choices=[
    ...     {"message": {"role": "assistant", "content": "4"}, "finish_reason": "stop"}])
    >>> async def roundtrip():
    ...     await cache.put(request, answer, None)
    ...     return (await cache.get(request, None)).text()
    >>> asyncio.run(roundtrip())
    '4'
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable

import orjson

from genai_factory.shared.models import ChatCompletionRequest, ChatCompletionResponse, Principal

__all__ = ["ExactMatchCache", "cacheable"]

_NOT_IN_KEY = {"stream", "stream_options", "user"}


def cacheable(request: ChatCompletionRequest) -> bool:
    """Deterministic enough to answer from a cache."""
    return request.temperature == 0 and request.n == 1 and not request.tools


class ExactMatchCache:
    """An LRU of answers keyed by tenant + canonical request.

    Args:
        max_entries: answers kept.
        ttl_s: how long an answer stays valid.
        clock: a monotonic clock (tests pass their own).
    """

    def __init__(
        self,
        max_entries: int = 2048,
        ttl_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, ChatCompletionResponse]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(request: ChatCompletionRequest, principal: Principal | None) -> str:
        tenant = principal.tenant if principal is not None else ""
        body = request.model_dump(exclude_none=True, by_alias=True, exclude=_NOT_IN_KEY)
        canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(tenant.encode() + b"\x00" + canonical).hexdigest()

    async def get(
        self, request: ChatCompletionRequest, principal: Principal | None
    ) -> ChatCompletionResponse | None:
        if not cacheable(request):
            return None
        key = self.key(request, principal)
        entry = self._entries.get(key)
        if entry is None or entry[0] < self._clock():
            if entry is not None:
                del self._entries[key]
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry[1].model_copy(deep=True)

    async def put(
        self,
        request: ChatCompletionRequest,
        response: ChatCompletionResponse,
        principal: Principal | None,
    ) -> None:
        if not cacheable(request) or not response.choices:
            return
        if any(choice.finish_reason not in ("stop", "length") for choice in response.choices):
            return  # never cache a cut-off or filtered answer
        key = self.key(request, principal)
        self._entries[key] = (self._clock() + self.ttl_s, response.model_copy(deep=True))
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
