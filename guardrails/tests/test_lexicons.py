"""Gazetteers, the NRP lexicon and the person / company context rules (no spaCy needed)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genai_factory.guardrails.detection import Detection
from genai_factory.guardrails.pii.lexicons import Lexicons
from genai_factory.guardrails.pii.ner import PresidioNER


@pytest.fixture(scope="module")
def lex() -> Lexicons:
    return Lexicons()


def found(detections: list[Detection]) -> list[tuple[str, str]]:
    return [(d.entity_type, d.text) for d in detections]


def test_countries_anywhere_cities_only_with_a_cue(lex: Lexicons) -> None:
    assert found(lex.places("Thanks, Canada is lovely.")) == [("LOCATION", "Canada")]
    # a city needs a cue ("in", "from", an address separator) or capitals
    assert found(lex.places("We flew to Aalborg on Monday.")) == [("LOCATION", "Aalborg")]
    assert found(lex.places("Aalborg is nice.")) == []
    assert found(lex.places("Suite 5 > OULU > Finland")) == [
        ("LOCATION", "OULU"),
        ("LOCATION", "Finland"),
    ]
    # common words that are also towns somewhere are never places
    assert found(lex.places("I was Reading in Mobile mode.")) == []
    assert lex.is_place("Goiânia") and lex.is_country("united kingdom")
    assert not lex.is_place("Wednesday")


def test_groups_with_plurals_and_without_languages(lex: Lexicons) -> None:
    assert found(lex.groups("We are proud saudis")) == [("NRP", "saudis")]
    assert found(lex.groups("The Spanish Border Force")) == [("NRP", "Spanish")]
    # a language or a proper name is not a group; nor is a common lower-case word
    assert found(lex.groups("She is studying English at school")) == []
    assert found(lex.groups("the Treaty on European Union")) == []
    assert found(lex.groups("a pole vault")) == []


def test_people_from_cues_lists_and_dialogue(lex: Lexicons) -> None:
    assert found(lex.people("Hi, my name is Tomomi Nishiyama.")) == [("PERSON", "Tomomi Nishiyama")]
    assert found(lex.people("my name is vitoria")) == [("PERSON", "vitoria")]
    assert found(lex.people("Asya spent a year at Allstate.")) == [("PERSON", "Asya")]
    assert found(lex.people("The weather is fine.")) == []
    listed = found(lex.name_lists("They had 6: Romi, Erik, Amy, Nathaniel, Donald and Kristen."))
    assert ("PERSON", "Amy") in listed and ("PERSON", "Kristen") in listed
    assert found(lex.name_lists("Ella: What a wife.")) == [("PERSON", "Ella")]
    assert found(lex.name_lists("Note: Please bring cake.")) == []


def test_companies_but_not_lists_of_people(lex: Lexicons) -> None:
    assert found(lex.companies("The Clark, Romero and Hall Orchestra")) == [
        ("ORGANIZATION", "Clark, Romero and Hall")
    ]
    assert found(lex.companies("Thomas and Sons is a bank")) == [
        ("ORGANIZATION", "Thomas and Sons")
    ]
    assert lex.companies("our founders: Šušulić, Bowman and White.") == []
    assert lex.companies("Nathaniel, Donald and Kristen") == []


def test_refine_relabels_drops_and_adds() -> None:
    ner = PresidioNER(entities=["PERSON", "LOCATION", "ORGANIZATION", "NRP"])
    text = "The Clark, Romero and Hall Orchestra met Donna in Goiânia. Mr. Rangel flew to Denmark."

    def span(entity: str, value: str) -> Detection:
        start = text.index(value)
        return Detection(entity, start, start + len(value), 0.6, "ner.x", "ner", value)

    refined = found(
        ner._refine(
            text,
            [
                span("PERSON", "Clark"),  # part of a company: dropped
                span("LOCATION", "Donna"),  # a first name: a person
                span("ORGANIZATION", "Goiânia"),  # the gazetteer knows the city
                span("ORGANIZATION", "Rangel"),  # after a title: a person
            ],
        )
    )
    assert ("PERSON", "Clark") not in refined
    assert ("PERSON", "Donna") in refined
    assert ("LOCATION", "Goiânia") in refined
    assert ("PERSON", "Rangel") in refined
    assert ("ORGANIZATION", "Clark, Romero and Hall") in refined
    assert ("LOCATION", "Denmark") in refined  # added by the gazetteer


def test_refine_drops_street_names_tagged_as_people() -> None:
    ner = PresidioNER(entities=["PERSON", "LOCATION"])
    text = "The bus station is on Peter Zuidhove 188"
    start = text.index("Peter")
    street = Detection("PERSON", start, len(text) - 4, 0.6, "ner.person", "ner", "Peter Zuidhove")
    assert ner._refine(text, [street]) == []
    assert PresidioNER(lexicons=False).lexicons is None


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=300))
def test_any_text_gives_valid_spans(text: str) -> None:
    lex = _shared()
    for detection in (
        lex.places(text)
        + lex.groups(text)
        + lex.people(text)
        + lex.name_lists(text)
        + lex.companies(text)
    ):
        assert 0 <= detection.start < detection.end <= len(text)
        assert text[detection.start : detection.end] == detection.text
        assert 0.0 < detection.score <= 1.0


_LEX: list[Lexicons] = []


def _shared() -> Lexicons:
    # Hypothesis forbids function-scoped fixtures; one loaded instance for every example
    if not _LEX:
        _LEX.append(Lexicons())
    return _LEX[0]
