"""The contracts every module implements and the gateway and applications depend on.

Each contract is a runtime-checkable Protocol: a component satisfies it by having the methods, with
no base class to inherit. A module implements the contracts it owns (guardrails -> Guard,
semantic-cache -> ResponseCache, ...) and the gateway composes them from config.

Example:
    >>> from genai_factory.shared.contracts import Embedder
    >>> class Lengths:
    ...     async def embed(self, texts: list[str]) -> list[list[float]]:
    ...         return [[float(len(t))] for t in texts]
    ...     @property
    ...     def dimensions(self) -> int:
    ...         return 1
    >>> isinstance(Lengths(), Embedder)
    True
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol, runtime_checkable

from genai_factory.shared.models import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    Chunk,
    CostRecord,
    Principal,
    ScoredChunk,
    Verdict,
)

__all__ = [
    "AuthDecision",
    "Authenticator",
    "Authorizer",
    "BudgetPolicy",
    "BudgetReservation",
    "ChatModel",
    "Embedder",
    "EvaluationResult",
    "Evaluator",
    "Guard",
    "Memory",
    "RateDecision",
    "RateLimiter",
    "Reranker",
    "ResponseCache",
    "Retriever",
    "SpendLedger",
    "Tool",
    "VectorStore",
]


@runtime_checkable
class ChatModel(Protocol):
    """A chat model: one answer, or a stream of chunks ending with a finish reason."""

    async def complete(self, request: ChatCompletionRequest) -> ChatCompletionResponse: ...

    def stream(self, request: ChatCompletionRequest) -> AsyncIterator[ChatCompletionChunk]: ...


@runtime_checkable
class Embedder(Protocol):
    """Texts to vectors, all of ``dimensions`` floats."""

    async def embed(self, texts: list[str]) -> list[list[float]]: ...

    @property
    def dimensions(self) -> int: ...


@runtime_checkable
class VectorStore(Protocol):
    """Stores chunks with their embeddings; nearest-neighbour search with metadata filters."""

    async def add(self, chunks: Sequence[Chunk]) -> None: ...

    async def search(
        self, vector: Sequence[float], k: int, filters: Mapping[str, Any] | None = None
    ) -> list[ScoredChunk]: ...

    async def delete(self, ids: Sequence[str]) -> int: ...


@runtime_checkable
class Retriever(Protocol):
    async def retrieve(
        self, query: str, k: int, filters: Mapping[str, Any] | None = None
    ) -> list[ScoredChunk]: ...


@runtime_checkable
class Reranker(Protocol):
    async def rerank(self, query: str, candidates: Sequence[ScoredChunk]) -> list[ScoredChunk]: ...


@runtime_checkable
class Guard(Protocol):
    """Screens what goes into a model and what comes out; the verdict explains itself.

    A ``redact`` verdict carries the rewritten content in ``Verdict.text``:

    - from ``check_input``: a JSON array with one entry per request message, in order, holding the
      message's new content or ``null`` when that message is unchanged (so a redaction in the
      system prompt or an earlier turn is not lost);
    - from ``check_output``: the rewritten answer text.
    """

    async def check_input(
        self, request: ChatCompletionRequest, principal: Principal | None
    ) -> Verdict: ...

    async def check_output(
        self, text: str, request: ChatCompletionRequest, principal: Principal | None
    ) -> Verdict: ...


@runtime_checkable
class ResponseCache(Protocol):
    """Answers a request from earlier answers; never across tenants."""

    async def get(
        self, request: ChatCompletionRequest, principal: Principal | None
    ) -> ChatCompletionResponse | None: ...

    async def put(
        self,
        request: ChatCompletionRequest,
        response: ChatCompletionResponse,
        principal: Principal | None,
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class RateDecision:
    """Whether a request may go ahead, and what the ``x-ratelimit-*`` headers should say."""

    allowed: bool
    limit: int
    remaining: int
    reset_after_s: float
    retry_after_s: float | None = None
    scope: str = ""


@runtime_checkable
class RateLimiter(Protocol):
    async def acquire(self, key: str, cost: int = 1) -> RateDecision: ...


@dataclass(frozen=True, slots=True)
class BudgetReservation:
    """An estimate held against a budget until settled with the real cost or released."""

    id: str
    scopes: tuple[str, ...]
    amount_usd: Decimal
    downgrade_to: str | None = None


@runtime_checkable
class BudgetPolicy(Protocol):
    """Reserve before the call, settle after, release on failure: exact across replicas."""

    async def reserve(
        self, principal: Principal, request: ChatCompletionRequest, estimate_usd: Decimal
    ) -> BudgetReservation: ...

    async def settle(self, reservation: BudgetReservation, record: CostRecord) -> None: ...

    async def release(self, reservation: BudgetReservation) -> None: ...


@runtime_checkable
class Authenticator(Protocol):
    """Credentials in request headers -> a Principal, or Unauthorized."""

    async def authenticate(self, headers: Mapping[str, str]) -> Principal: ...


@dataclass(frozen=True, slots=True)
class AuthDecision:
    allowed: bool
    rule: str
    reason: str = ""


@runtime_checkable
class Authorizer(Protocol):
    """May ``principal`` do ``action`` on ``resource``? Deny by default; say which rule decided."""

    async def authorize(
        self,
        principal: Principal,
        action: str,
        resource: str,
        context: Mapping[str, Any] | None = None,
    ) -> AuthDecision: ...


@runtime_checkable
class SpendLedger(Protocol):
    async def record(self, record: CostRecord) -> None: ...

    async def total(self, scope: str, since_epoch_s: float | None = None) -> Decimal: ...


@runtime_checkable
class Tool(Protocol):
    """A function an agent may call; ``parameters`` is its JSON schema."""

    @property
    def name(self) -> str: ...

    @property
    def description(self) -> str: ...

    @property
    def parameters(self) -> dict[str, Any]: ...

    async def invoke(self, arguments: Mapping[str, Any]) -> str: ...


@runtime_checkable
class Memory(Protocol):
    """Conversation or agent memory, scoped by session."""

    async def load(self, session_id: str) -> list[dict[str, Any]]: ...

    async def append(self, session_id: str, items: Sequence[Mapping[str, Any]]) -> None: ...

    async def clear(self, session_id: str) -> None: ...


@dataclass(frozen=True, slots=True)
class EvaluationResult:
    metric: str
    score: float
    passed: bool | None = None
    details: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class Evaluator(Protocol):
    async def evaluate(
        self,
        *,
        question: str,
        answer: str,
        contexts: Sequence[str] = (),
        reference: str | None = None,
    ) -> EvaluationResult: ...
