"""PIIGuard behind the Guard contract: redact, detect, block, pseudonymise and restore."""

from __future__ import annotations

import json

from genai_factory.guardrails.base import apply_input_verdict
from genai_factory.guardrails.pii import Anonymizer, PIIAnalyzer, PIIGuard
from genai_factory.shared.contracts import Guard
from genai_factory.shared.factory import build_component, dump_component

from .conftest import chat


def rules_guard(**params: object) -> PIIGuard:
    return PIIGuard(analyzer=PIIAnalyzer(use_ner=False), **params)  # type: ignore[arg-type]


async def test_input_is_redacted_message_by_message() -> None:
    guard = rules_guard()
    assert isinstance(guard, Guard)
    request = chat(
        ("system", "Support bot. Escalate to ops@example.com."),
        ("user", "I am ann@example.org, card 4111 1111 1111 1111."),
        ("user", "Thanks!"),
    )
    verdict = await guard.check_input(request, None)
    assert verdict.decision == "redact"
    rewrites = json.loads(verdict.text or "")
    assert rewrites == [None, "I am [EMAIL_ADDRESS], card [CREDIT_CARD].", None]
    assert {f.message.split()[0] for f in verdict.findings} == {"EMAIL_ADDRESS", "CREDIT_CARD"}
    assert all(f.layer == "rules" and f.category == "pii" for f in verdict.findings)
    assert "pii.rules" in verdict.timings_ms
    safe = apply_input_verdict(request, verdict)
    assert safe.messages[0].content == request.messages[0].content  # the system prompt is kept
    assert "ann@example.org" not in safe.model_dump_json()


async def test_clean_input_is_allowed_without_findings() -> None:
    verdict = await rules_guard().check_input(
        chat(("user", "What is the capital of France?")), None
    )
    assert verdict.decision == "allow" and verdict.findings == [] and verdict.text is None


async def test_detect_mode_reports_and_block_entities_refuse() -> None:
    request = chat(("user", "mail ann@example.org with key AKIAIOSFODNN7EXAMPLE"))
    detect = await rules_guard(mode="detect").check_input(request, None)
    assert detect.decision == "allow" and len(detect.findings) == 2
    blocked = await rules_guard(block_entities=["SECRET"]).check_input(request, None)
    assert blocked.decision == "block"
    assert {f.category for f in blocked.findings} == {"pii", "secret"}
    whole = await rules_guard(mode="block").check_input(chat(("user", "ann@example.org")), None)
    assert whole.decision == "block"


async def test_pseudonyms_round_trip_through_the_model() -> None:
    guard = rules_guard(anonymizer=Anonymizer("pseudonymize"))
    request = chat(
        ("user", "Email ann@example.org and bob@example.org about IBAN DE89370400440532013000")
    )
    verdict = await guard.check_input(request, None)
    sent = json.loads(verdict.text or "")[0]
    assert sent == "Email <EMAIL_ADDRESS_1> and <EMAIL_ADDRESS_2> about IBAN <IBAN_CODE_1>"
    # the model answers with placeholders, and leaks a new address of its own
    answer = "Done: wrote <EMAIL_ADDRESS_2>, cc <EMAIL_ADDRESS_1> and eve@evil.example."
    restored = await guard.check_output(answer, request, None)
    assert restored.decision == "redact"
    assert restored.text == "Done: wrote bob@example.org, cc ann@example.org and [EMAIL_ADDRESS]."
    assert [f.message for f in restored.findings] == ["EMAIL_ADDRESS in the answer"]
    # the gateway may pass the rewritten request instead: the vault is found either way
    again = await guard.check_output(answer, apply_input_verdict(request, verdict), None)
    assert again.text == restored.text


async def test_output_without_vault_is_scanned_for_leaks() -> None:
    guard = rules_guard()
    request = chat(("user", "hello"))
    clean = await guard.check_output("Hello! How can I help?", request, None)
    assert clean.decision == "allow" and clean.text is None
    leak = await guard.check_output(
        "The admin key is ghp_0123456789abcdefghijklmnopqrstuvwxyzAB", request, None
    )
    assert leak.decision == "redact" and leak.text == "The admin key is [SECRET]"
    strict = rules_guard(output_mode="block")
    assert (await strict.check_output("call 212-555-0199", request, None)).decision == "block"


def test_pii_guard_builds_from_config_and_dumps_back() -> None:
    spec = {
        "type": "genai_factory.guardrails.pii:PIIGuard",
        "params": {
            "analyzer": {
                "type": "genai_factory.guardrails.pii:PIIAnalyzer",
                "params": {"use_ner": False, "entities": ["EMAIL_ADDRESS"]},
            },
            "anonymizer": {
                "type": "genai_factory.guardrails.pii:Anonymizer",
                "params": {"action": "mask", "mask_keep_last": 2},
            },
            "block_entities": ["SECRET"],
        },
    }
    guard = build_component(spec, Guard)
    assert isinstance(guard, PIIGuard)
    assert guard.analyzer.entities == ["EMAIL_ADDRESS"] and guard.anonymizer.action == "mask"
    dumped = dump_component(guard)
    assert dumped["params"]["analyzer"]["params"]["entities"] == ["EMAIL_ADDRESS"]
    rebuilt = build_component(dumped, Guard)
    assert isinstance(rebuilt, PIIGuard) and rebuilt.block_entities == ["SECRET"]
