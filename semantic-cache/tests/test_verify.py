"""The verifier blocks meaning-changing edits and lets real paraphrases through."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genai_factory.cache.normalize import normalize_prompt
from genai_factory.cache.verify import PairVerifier, extract_features

VERIFIER = PairVerifier()

WORDS = st.sampled_from(
    [
        "how",
        "can",
        "i",
        "reset",
        "my",
        "password",
        "account",
        "the",
        "server",
        "for",
        "a",
        "team",
        "report",
        "invoice",
        "order",
        "please",
        "show",
        "me",
        "what",
        "is",
        "cost",
        "price",
        "setting",
        "page",
        "app",
        "data",
    ]
)
SENTENCES = st.lists(WORDS, min_size=1, max_size=12).map(" ".join)


@pytest.mark.parametrize(
    ("a", "b", "reason"),
    [
        ("How do I enable dark mode?", "How do I disable dark mode?", "polarity"),
        ("Increase the timeout", "Decrease the timeout", "polarity"),
        ("Add a user to the team", "Remove a user from the team", "polarity"),
        ("Is smoking allowed here?", "Is smoking not allowed here?", "negation"),
        ("Why doesn't my build run?", "Why does my build run?", "negation"),
        ("Flights to Paris tomorrow", "Flights to London tomorrow", "entities"),
        ("Flights to Paris tomorrow", "Flights to Paris today", "dates"),
        ("Meeting on 3 March", "Meeting on 3 April", "dates"),
        ("Convert 5 miles to km", "Convert 50 miles to km", "numbers"),
        ("Convert five miles to km", "Convert six miles to km", "numbers"),
        ("Are all users admins?", "Are some users admins?", "quantity"),
        ("Do all tests pass?", "Do tests pass?", "quantity"),
        ("Book a flight from Boston to Denver", "Book a flight from Denver to Boston", "order"),
        ("Convert 5 miles to kilometers", "Convert 5 kilometers to miles", "order"),
        ("Is Tokyo bigger than Paris?", "Is Paris bigger than Tokyo?", "order"),
        ("Turn on the alarm", "Turn off the alarm", "polarity"),
        ("Send the report weekly", "Send the report monthly", "polarity"),
        ("Water the plants in the morning", "Water the plants in the evening", "polarity"),
    ],
)
def test_meaning_changing_edits_are_rejected(a: str, b: str, reason: str) -> None:
    verdict = VERIFIER.verify(a, b)
    assert not verdict.passed
    assert reason in verdict.reasons


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("How do I reset my password?", "how can i reset my password"),
        ("What is the capital of France?", "what's the capital city of france"),
        ("Summarize this article", "Please summarize this article"),
        ("Do not share my data", "Don't share my data"),
        ("Order 1,000 units", "Order 1000 units"),
        ("Explain the GDPR in simple words", "Explain GDPR simply"),
        ("Lock the front door at 10 pm", "At 10 pm, lock the front door"),
        ("Is the shop open on Sunday?", "Are you open on Sundays?"),
        ("Are all employees eligible?", "Is every employee eligible?"),
        ("Turn on dark mode", "Enable dark mode"),
        ("Raise the upload limit to 10 MB", "Increase the upload limit to 10 MB"),
    ],
)
def test_paraphrases_pass(a: str, b: str) -> None:
    assert VERIFIER.verify(a, b).passed, VERIFIER.verify(a, b)


def test_checks_can_be_switched_off_and_unknown_ones_are_refused() -> None:
    lenient = PairVerifier(checks=["negation"])
    assert lenient.verify("Flights to Paris", "Flights to Rome").passed
    with pytest.raises(ValueError, match="unknown verifier checks"):
        PairVerifier(checks=["vibes"])


@settings(max_examples=200, deadline=None)
@given(SENTENCES, st.integers(min_value=0, max_value=12))
def test_inserting_not_always_blocks(sentence: str, position: int) -> None:
    words = sentence.split()
    position = min(position, len(words))
    negated = " ".join([*words[:position], "not", *words[position:]])
    verdict = VERIFIER.verify(sentence, negated)
    assert not verdict.passed and "negation" in verdict.reasons


@settings(max_examples=200, deadline=None)
@given(
    SENTENCES,
    SENTENCES,
    st.integers(min_value=0, max_value=10**9),
    st.integers(min_value=0, max_value=10**9),
)
def test_changing_a_number_always_blocks(head: str, tail: str, old: int, new: int) -> None:
    if old == new:
        new = old + 1
    a = f"{head} {old} {tail}"
    b = f"{head} {new} {tail}"
    verdict = VERIFIER.verify(a, b)
    assert not verdict.passed and "numbers" in verdict.reasons


@settings(max_examples=200, deadline=None)
@given(SENTENCES)
def test_a_text_always_verifies_against_itself_and_its_normal_form(sentence: str) -> None:
    assert VERIFIER.verify(sentence, sentence).passed
    # normalisation (case, spacing) never creates or hides a difference in these features
    a, b = extract_features(sentence), extract_features(normalize_prompt(sentence))
    assert a.negations == b.negations and a.numbers == b.numbers


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=200), st.text(max_size=200))
def test_any_text_pair_gets_an_answer_and_the_check_is_symmetric(a: str, b: str) -> None:
    forward, backward = VERIFIER.verify(a, b), VERIFIER.verify(b, a)
    assert forward.passed == backward.passed
    assert set(forward.reasons) == set(backward.reasons)
