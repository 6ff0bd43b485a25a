"""Normalisation is idempotent, ignores case/spacing/invisible characters, keeps words."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from genai_factory.cache.normalize import canonical_json, normalize_prompt, stable_hash


@given(st.text(max_size=300))
def test_normalising_twice_changes_nothing(text: str) -> None:
    once = normalize_prompt(text)
    assert normalize_prompt(once) == once


@given(st.lists(st.from_regex(r"[A-Za-z0-9]{1,8}", fullmatch=True), min_size=1, max_size=10))
def test_case_spacing_and_invisible_characters_do_not_matter(words: list[str]) -> None:
    plain = " ".join(words)
    noisy = "  " + "\t \u200b".join(w.upper() for w in words) + " ?! "
    assert normalize_prompt(noisy) == normalize_prompt(plain)


@given(st.lists(st.from_regex(r"[a-z]{1,8}", fullmatch=True), min_size=2, max_size=10))
def test_words_are_never_dropped(words: list[str]) -> None:
    assert normalize_prompt(" ".join(words)).split(" ") == words


@given(st.text(max_size=50), st.text(max_size=50))
def test_hash_parts_are_length_prefixed(a: str, b: str) -> None:
    if a:
        assert stable_hash(a, b) != stable_hash(a[:-1], a[-1] + b)


def test_canonical_json_ignores_key_order() -> None:
    assert canonical_json({"b": 1, "a": [1, 2]}) == canonical_json({"a": [1, 2], "b": 1})
