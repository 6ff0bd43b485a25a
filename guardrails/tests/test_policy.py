"""The policy engine: YAML rules per tenant and route, actions, order, timing, config errors."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from genai_factory.guardrails.embeddings import MiniLMEmbedder
from genai_factory.guardrails.policy import PolicyEngine, parse_policies
from genai_factory.shared.contracts import Guard
from genai_factory.shared.errors import ConfigError
from genai_factory.shared.factory import build_component, dump_component
from genai_factory.shared.models import (
    ChatCompletionChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatMessage,
    Principal,
)

from .conftest import chat

POLICY_YAML = """
policies:
  - id: everyone
    rules:
      - {id: max-input, type: length, direction: input, max_chars: 200, action: block}
      - {id: codenames, type: keywords, words: [project falcon, "blue-bird"], action: redact}
      - {id: tickets, type: regex, pattern: 'TICKET-\\d+', action: warn}
      - {id: lawsuits, type: keywords, words: [lawsuit, sue you], action: escalate}
  - id: bank
    tenants: [bank-*]
    routes: [support]
    rules:
      - {id: links, type: allowed_domains, direction: output, domains: [bank.example], action: redact}
      - {id: disclaimer, type: required_disclaimer, text: "This is not financial advice.", action: redact}
"""


@pytest.fixture
def engine(tmp_path: Path) -> PolicyEngine:
    path = tmp_path / "policies.yaml"
    path.write_text(POLICY_YAML)
    return PolicyEngine(path=str(path))


BANK = Principal(subject="u1", org_id="bank-eu")


async def test_redact_warn_and_timing_for_every_rule(engine: PolicyEngine) -> None:
    assert isinstance(engine, Guard)
    request = chat(("user", "Status of Project Falcon? See TICKET-42."))
    verdict = await engine.check_input(request, None)
    assert verdict.decision == "redact"
    assert json.loads(verdict.text or "") == ["Status of [REDACTED:codenames]? See TICKET-42."]
    assert [f.rule_id for f in verdict.findings] == ["codenames", "tickets"]
    assert set(verdict.timings_ms) == {
        "policy.max-input",
        "policy.codenames",
        "policy.tickets",
        "policy.lawsuits",
    }


async def test_block_and_escalate_short_circuit(engine: PolicyEngine) -> None:
    long_one = await engine.check_input(chat(("user", "x" * 300 + " lawsuit")), None)
    assert long_one.decision == "block" and [f.rule_id for f in long_one.findings] == ["max-input"]
    assert set(long_one.timings_ms) == {"policy.max-input"}  # later rules never ran
    escalated = await engine.check_input(chat(("user", "We will sue you tomorrow")), None)
    assert escalated.decision == "block" and escalated.findings[0].category == "escalation"


async def test_rules_apply_per_tenant_and_route(engine: PolicyEngine) -> None:
    answer = "Read https://evil.example/offer and https://www.bank.example/rates."
    support = chat(("user", "rates?"), route="support")
    verdict = await engine.check_output(answer, support, BANK)
    assert verdict.decision == "redact"
    assert verdict.text == (
        "Read [REDACTED:links] and https://www.bank.example/rates.\n\nThis is not financial advice."
    )
    assert [f.rule_id for f in verdict.findings] == ["links", "disclaimer"]
    other_tenant = await engine.check_output(answer, support, Principal(subject="x", org_id="shop"))
    assert other_tenant.decision == "allow"
    other_route = await engine.check_output(answer, chat(("user", "rates?")), BANK)
    assert other_route.decision == "allow"
    assert engine.rules_for("bank-1", "support", "output")[-1].id == "disclaimer"


class ScriptedModel:
    def __init__(self, answers: list[str]) -> None:
        self.answers = answers

    async def complete(self, request: ChatCompletionRequest) -> ChatCompletionResponse:
        return ChatCompletionResponse(
            model=request.model,
            choices=[
                ChatCompletionChoice(
                    message=ChatMessage(role="assistant", content=self.answers.pop(0))
                )
            ],
        )

    def stream(self, request: ChatCompletionRequest) -> AsyncIterator[ChatCompletionChunk]:
        raise NotImplementedError


async def test_reask_gets_a_compliant_answer_or_blocks() -> None:
    policies = [
        {
            "id": "p",
            "rules": [
                {
                    "id": "disc",
                    "type": "required_disclaimer",
                    "text": "Not advice.",
                    "action": "re-ask",
                }
            ],
        }
    ]
    fixed = PolicyEngine(policies=policies, reask_model=ScriptedModel(["Buy bonds. Not advice."]))
    verdict = await fixed.check_output("Buy bonds.", chat(("user", "tip?")), None)
    assert verdict.decision == "redact" and verdict.text == "Buy bonds. Not advice."
    assert "policy.reask" in verdict.timings_ms
    stubborn = PolicyEngine(policies=policies, reask_model=ScriptedModel(["Buy bonds!"]))
    assert (
        await stubborn.check_output("Buy bonds.", chat(("user", "tip?")), None)
    ).decision == "block"
    no_model = PolicyEngine(policies=policies)
    assert (
        await no_model.check_output("Buy bonds.", chat(("user", "tip?")), None)
    ).decision == "block"


@pytest.mark.integration
async def test_banned_topic_by_embedding_similarity(embedder: MiniLMEmbedder) -> None:
    engine = PolicyEngine(
        policies=[
            {
                "id": "p",
                "rules": [
                    {
                        "id": "no-medical",
                        "type": "banned_topic",
                        "topics": [
                            "diagnosing a medical condition",
                            "dosage of prescription drugs",
                        ],
                        "threshold": 0.5,
                        "action": "block",
                    }
                ],
            }
        ],
        embedder=embedder,
    )
    hit = await engine.check_input(
        chat(("user", "Hi! How many milligrams of my prescription medicine should I take?")), None
    )
    assert hit.decision == "block" and hit.findings[0].rule_id == "no-medical"
    assert hit.findings[0].start is not None
    miss = await engine.check_input(chat(("user", "What is the best way to learn Spanish?")), None)
    assert miss.decision == "allow"
    dumped = dump_component(engine)
    assert dumped["params"]["policies"][0]["id"] == "p"


@pytest.mark.parametrize(
    ("data", "names"),
    [
        (
            {
                "policies": [
                    {"id": "p", "rules": [{"id": "bad-re", "type": "regex", "pattern": "("}]}
                ]
            },
            "rule 'bad-re' of policy 'p'",
        ),
        (
            {"policies": [{"id": "p", "rules": [{"id": "r1", "type": "telepathy"}]}]},
            "rule 'r1' of policy 'p'",
        ),
        (
            {"policies": [{"id": "p", "rules": [{"id": "r2", "type": "keywords", "words": []}]}]},
            "rule 'r2'",
        ),
        (
            {
                "policies": [
                    {"id": "p", "rules": [{"id": "r3", "type": "length", "action": "nuke"}]}
                ]
            },
            "rule 'r3'",
        ),
        (
            {
                "policies": [
                    {
                        "id": "p",
                        "rules": [{"id": "r4", "type": "keywords", "words": ["a"], "typo": 1}],
                    }
                ]
            },
            "rule 'r4'",
        ),
        ({"policies": [{"rules": []}]}, "policy '0'"),
        ({"rules": []}, "policy file"),
    ],
)
def test_invalid_rules_raise_config_errors_naming_the_rule(data: object, names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        parse_policies(data)


def test_duplicate_ids_bad_yaml_and_bad_arguments(tmp_path: Path) -> None:
    rule = {"id": "same", "type": "keywords", "words": ["a"]}
    with pytest.raises(ConfigError, match="'same' is used twice"):
        parse_policies([{"id": "p", "rules": [rule, rule]}])
    broken = tmp_path / "broken.yaml"
    broken.write_text("policies: [\n  - id: p\n    rules: {")
    with pytest.raises(ConfigError, match="line"):
        PolicyEngine(path=str(broken))
    with pytest.raises(ConfigError, match="exactly one"):
        PolicyEngine()


def test_policy_engine_builds_from_config(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(POLICY_YAML)
    engine = build_component(
        {"type": "genai_factory.guardrails.policy:PolicyEngine", "params": {"path": str(path)}},
        Guard,
    )
    assert isinstance(engine, PolicyEngine) and engine.rule_ids[0] == "max-input"
    assert dump_component(engine) == {
        "type": "genai_factory.guardrails.policy:PolicyEngine",
        "params": {"path": str(path)},
    }
    with pytest.raises(ConfigError, match="rule 'x'"):
        build_component(
            {
                "type": "genai_factory.guardrails.policy:PolicyEngine",
                "params": {
                    "policies": [
                        {"id": "p", "rules": [{"id": "x", "type": "regex", "pattern": "["}]}
                    ]
                },
            }
        )


@given(st.text(max_size=200))
def test_any_text_evaluates_without_error(text: str) -> None:
    engine = PolicyEngine(
        policies=[
            {
                "id": "p",
                "rules": [
                    {"id": "k", "type": "keywords", "words": ["alpha"], "action": "redact"},
                    {
                        "id": "d",
                        "type": "allowed_domains",
                        "domains": ["ok.example"],
                        "action": "redact",
                    },
                    {"id": "l", "type": "length", "max_chars": 150, "action": "redact"},
                ],
            }
        ]
    )
    timings: dict[str, float] = {}
    decision, _, out, _ = engine._evaluate(engine.rules_for("t", "r", "input"), text, timings, "x")
    assert decision in {"allow", "redact"} and len(timings) == 3
    # a redacted keyword never survives, and an untouched text comes back unchanged
    assert not re.search(r"(?<!\w)alpha(?!\w)", out, re.IGNORECASE)
    assert decision == "redact" or out == text
