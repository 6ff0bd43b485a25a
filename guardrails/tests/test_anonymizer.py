"""Anonymisation: every action, and the property that no detected span survives."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genai_factory.guardrails.detection import Detection, resolve_overlaps
from genai_factory.guardrails.pii.analyzer import PIIAnalyzer
from genai_factory.guardrails.pii.anonymizer import ACTIONS, Anonymizer, merge_spans
from genai_factory.guardrails.pii.vault import PseudonymVault, VaultStore

ENTITIES = st.sampled_from(
    [
        "ann.lee@example.org",
        "bob_99@mail.example.co.uk",
        "4111 1111 1111 1111",
        "5500-0000-0000-0004",
        "GB82 WEST 1234 5698 7654 32",
        "DE89370400440532013000",
        "123-45-6789",
        "+44 20 7946 0958",
        "(415) 555-2671",
        "10.20.30.40",
        "2001:db8::8a2e:370:7334",
        "https://intranet.example.com/payroll",
        "AB 12 34 56 C",
        "AKIAIOSFODNN7EXAMPLE",
        "sk-proj-4f9Ab2cD8eF1gH7iJ3kL5mN0pQ",
    ]
)
FILLER = st.sampled_from(
    ["hello", "please", "send", "it", "to", "my", "account", "and", "the", "report", ",", ".", "\n"]
)
PIECES = st.lists(st.one_of(ENTITIES, FILLER), min_size=1, max_size=12)


def build(pieces: list[str]) -> str:
    return " ".join(pieces)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(PIECES, st.sampled_from(["redact", "hash", "pseudonymize", "mask"]))
def test_no_detected_span_survives_anonymisation(
    rules_analyzer: PIIAnalyzer, pieces: list[str], action: str
) -> None:
    text = build(pieces)
    detections = rules_analyzer.analyze(text).detections
    vault = PseudonymVault()
    out = Anonymizer(action, per_entity={"SECRET": action}).anonymize(text, detections, vault)  # type: ignore[arg-type]
    for d in detections:
        assert d.text not in out.text, (d, out.text)
    # and nothing in the output is personal data any more
    assert rules_analyzer.analyze(out.text).detections == []
    if action == "pseudonymize":
        assert vault.restore(out.text) == text


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(PIECES)
def test_fakes_replace_every_value_deterministically(
    rules_analyzer: PIIAnalyzer, pieces: list[str]
) -> None:
    text = build(pieces)
    detections = rules_analyzer.analyze(text).detections
    first = Anonymizer("fake", per_entity={"SECRET": "fake"}, seed=7).anonymize(text, detections)
    again = Anonymizer("fake", per_entity={"SECRET": "fake"}, seed=7).anonymize(text, detections)
    assert first.text == again.text
    for d in detections:
        assert d.text not in first.text


def test_fakes_are_realistic_and_consistent() -> None:
    text = "Mail ann@example.org, then ann@example.org again; card 4111 1111 1111 1111."
    detections = PIIAnalyzer(use_ner=False).analyze(text).detections
    out = Anonymizer("fake", seed=1).anonymize(text, detections).text
    emails = re.findall(r"[\w.+-]+@[\w.-]+", out)
    assert len(emails) == 2 and emails[0] == emails[1] != "ann@example.org"
    # Faker's card numbers pass Luhn, so the fake still looks like a card to downstream code
    kinds = {d.entity_type for d in PIIAnalyzer(use_ner=False).analyze(out).detections}
    assert {"EMAIL_ADDRESS", "CREDIT_CARD"} <= kinds
    other_seed = Anonymizer("fake", seed=2).anonymize(text, detections).text
    assert other_seed != out


def test_mask_and_hash_options() -> None:
    d = [Detection("CREDIT_CARD", 5, 24, 0.9, "r", "rules", "4111 1111 1111 1111")]
    text = "card 4111 1111 1111 1111"
    assert (
        Anonymizer("mask", mask_keep_last=4).anonymize(text, d).text == "card **** **** **** 1111"
    )
    assert Anonymizer("mask", mask_char="#").anonymize(text, d).text == "card #### #### #### ####"
    keyed = Anonymizer("hash", hash_key="k1").anonymize(text, d).text
    assert keyed == Anonymizer("hash", hash_key="k1").anonymize(text, d).text
    assert keyed != Anonymizer("hash", hash_key="k2").anonymize(text, d).text
    assert re.fullmatch(r"card <CREDIT_CARD#[a-p]{12}>", keyed)


def test_secrets_are_redacted_whatever_the_default_action() -> None:
    text = "key AKIAIOSFODNN7EXAMPLE"
    d = [Detection("SECRET", 4, 24, 0.9, "secret.aws_access_key", "rules", "AKIAIOSFODNN7EXAMPLE")]
    assert Anonymizer("fake").anonymize(text, d).text == "key [SECRET]"


def test_overlapping_spans_merge_so_nothing_leaks() -> None:
    text = "John Smith Corp"
    spans = [
        Detection("PERSON", 0, 10, 0.85, "ner.person", "ner", "John Smith"),
        Detection("ORGANIZATION", 5, 15, 0.6, "ner.organization", "ner", "Smith Corp"),
    ]
    assert [(m.start, m.end, m.entity_type) for m in merge_spans(spans)] == [(0, 15, "PERSON")]
    assert Anonymizer().anonymize(text, spans).text == "[PERSON]"
    assert [d.entity_type for d in resolve_overlaps(spans)] == ["PERSON"]


def test_invalid_configuration_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown action"):
        Anonymizer("shred")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown action"):
        Anonymizer(per_entity={"PERSON": "shred"})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="mask_char"):
        Anonymizer(mask_char="**")
    with pytest.raises(ValueError, match="needs a PseudonymVault"):
        Anonymizer("pseudonymize").replacement("PERSON", "Ada")
    assert set(ACTIONS) == {"redact", "mask", "hash", "fake", "pseudonymize"}


def test_vault_restores_only_its_own_placeholders() -> None:
    vault = PseudonymVault()
    p = vault.placeholder("PERSON", "Ada")
    assert vault.restore(f"{p} and <PERSON_9> and <ORG_1>") == "Ada and <PERSON_9> and <ORG_1>"
    assert vault.original(p) == "Ada" and vault.mapping() == {p: "Ada"}
    assert vault.placeholder_spans(f"x {p}") == [(2, 2 + len(p))]
    assert PseudonymVault().restore("<PERSON_1>") == "<PERSON_1>"


def test_vault_store_is_bounded_in_size_and_age() -> None:
    store = VaultStore(max_entries=2, ttl_s=60)
    vaults = [PseudonymVault() for _ in range(3)]
    for i, v in enumerate(vaults):
        store.put(str(i), v)
    assert len(store) == 2 and store.get("0") is None and store.get("2") is vaults[2]
    assert store.pop("2") is vaults[2] and store.pop("2") is None
    expired = VaultStore(ttl_s=0.0)
    expired.put("a", vaults[0])
    import time

    time.sleep(0.01)
    assert expired.get("a") is None
