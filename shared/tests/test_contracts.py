"""Each contract is satisfied structurally, and a component missing a method is told apart."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from decimal import Decimal
from typing import Any

import pytest

from genai_factory.shared import contracts as c
from genai_factory.shared.models import (
    ChatCompletionChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatMessage,
    CostRecord,
    Principal,
    Verdict,
)


class EchoModel:
    """A scripted model for contract tests only (the real one is tested in model-serving)."""

    async def complete(self, request: ChatCompletionRequest) -> ChatCompletionResponse:
        text = request.messages[-1].text()
        return ChatCompletionResponse(
            model=request.model,
            choices=[
                ChatCompletionChoice(
                    message=ChatMessage(role="assistant", content=text), finish_reason="stop"
                )
            ],
        )

    async def stream(self, request: ChatCompletionRequest) -> AsyncIterator[ChatCompletionChunk]:
        for word in request.messages[-1].text().split():
            yield ChatCompletionChunk.model_validate(
                {"id": "c", "model": request.model, "choices": [{"delta": {"content": word}}]}
            )


class InMemoryLedger:
    def __init__(self) -> None:
        self.records: list[CostRecord] = []

    async def record(self, record: CostRecord) -> None:
        self.records.append(record)

    async def total(self, scope: str, since_epoch_s: float | None = None) -> Decimal:
        return sum((r.cost_usd for r in self.records if scope in (r.org_id, r.user_id)), Decimal(0))


class AllowAll:
    async def authorize(
        self,
        principal: Principal,
        action: str,
        resource: str,
        context: Mapping[str, Any] | None = None,
    ) -> c.AuthDecision:
        return c.AuthDecision(allowed=True, rule="allow-all")


class HalfAGuard:
    async def check_input(
        self, request: ChatCompletionRequest, principal: Principal | None
    ) -> Verdict:
        return Verdict(decision="allow")


@pytest.mark.parametrize(
    ("component", "contract"),
    [
        (EchoModel(), c.ChatModel),
        (InMemoryLedger(), c.SpendLedger),
        (AllowAll(), c.Authorizer),
    ],
)
def test_components_satisfy_their_contract_structurally(component: object, contract: type) -> None:
    assert isinstance(component, contract)


def test_a_component_missing_a_method_does_not_satisfy_the_contract() -> None:
    assert not isinstance(HalfAGuard(), c.Guard)
    assert not isinstance(EchoModel(), c.Embedder)


async def test_contract_methods_work_through_the_protocol_types() -> None:
    model: c.ChatModel = EchoModel()
    request = ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "hello there"}]}
    )
    assert (await model.complete(request)).text() == "hello there"
    words = [ch.choices[0].delta.content async for ch in model.stream(request)]
    assert words == ["hello", "there"]
    ledger: c.SpendLedger = InMemoryLedger()
    await ledger.record(
        CostRecord(request_id="r", model="m", org_id="acme", cost_usd=Decimal("0.5"))
    )
    assert await ledger.total("acme") == Decimal("0.5")


def test_decisions_are_immutable_values() -> None:
    decision = c.RateDecision(
        allowed=False, limit=10, remaining=0, reset_after_s=1.5, retry_after_s=1.5, scope="key:k1"
    )
    with pytest.raises(AttributeError):
        decision.allowed = True  # type: ignore[misc]
    reservation = c.BudgetReservation(id="r1", scopes=("org:acme",), amount_usd=Decimal("0.01"))
    assert reservation.downgrade_to is None
