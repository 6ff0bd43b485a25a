"""Checksums and validity rules, with property tests against independent constructions."""

from __future__ import annotations

import string

from hypothesis import given
from hypothesis import strategies as st

from genai_factory.guardrails.pii.validators import (
    IBAN_LENGTHS,
    iban_valid,
    luhn_valid,
    shannon_entropy,
    uk_nino_valid,
    us_ssn_valid,
)


def luhn_check_digit(payload: str) -> str:
    """The digit that makes payload + digit Luhn-valid (computed the textbook way)."""
    digits = [int(c) for c in payload][::-1]
    total = 0
    for i, d in enumerate(digits):
        if i % 2 == 0:  # these positions are doubled once the check digit is appended
            d *= 2
            d = d - 9 if d > 9 else d
        total += d
    return str((10 - total % 10) % 10)


def iban_with_check(country: str, bban: str) -> str:
    """An IBAN with correct check digits, computed with Python's big integers."""
    numeric = "".join(str(int(c, 36)) for c in bban + country + "00")
    check = 98 - int(numeric) % 97
    return f"{country}{check:02d}{bban}"


@given(st.text(alphabet=string.digits, min_size=12, max_size=18))
def test_luhn_accepts_every_number_with_a_correct_check_digit(payload: str) -> None:
    number = payload + luhn_check_digit(payload)
    assert luhn_valid(number)
    assert luhn_valid(" ".join(number[i : i + 4] for i in range(0, len(number), 4)))


@given(
    st.text(alphabet=string.digits, min_size=12, max_size=18),
    st.data(),
)
def test_luhn_rejects_every_single_digit_error(payload: str, data: st.DataObject) -> None:
    number = payload + luhn_check_digit(payload)
    position = data.draw(st.integers(0, len(number) - 1))
    wrong = data.draw(st.sampled_from([d for d in string.digits if d != number[position]]))
    assert not luhn_valid(number[:position] + wrong + number[position + 1 :])


@given(st.text(min_size=0, max_size=30))
def test_luhn_never_raises_and_rejects_non_digits(value: str) -> None:
    result = luhn_valid(value)
    if any(c.isalpha() for c in value):
        assert result is False


@given(st.sampled_from(sorted(IBAN_LENGTHS)), st.data())
def test_iban_accepts_correct_check_digits_and_rejects_any_substitution(
    country: str, data: st.DataObject
) -> None:
    alphabet = string.ascii_uppercase + string.digits
    bban = data.draw(
        st.text(
            alphabet=alphabet,
            min_size=IBAN_LENGTHS[country] - 4,
            max_size=IBAN_LENGTHS[country] - 4,
        )
    )
    iban = iban_with_check(country, bban)
    assert iban_valid(iban)
    assert iban_valid(" ".join(iban[i : i + 4] for i in range(0, len(iban), 4)).lower())
    position = data.draw(st.integers(2, len(iban) - 1))  # the country code is checked separately
    # mod 97 catches any change within a character class; a letter for a digit changes the
    # number's length, which the checksum does not promise to catch
    pool = string.digits if iban[position].isdigit() else string.ascii_uppercase
    wrong = data.draw(st.sampled_from([c for c in pool if c != iban[position]]))
    assert not iban_valid(iban[:position] + wrong + iban[position + 1 :])


def test_iban_rejects_wrong_length_and_unknown_country() -> None:
    assert iban_valid("GB82WEST12345698765432")
    assert not iban_valid("GB82WEST1234569876543")  # one short
    assert not iban_valid("XX82WEST12345698765432")
    assert not iban_valid("GB8XWEST12345698765432")
    assert not iban_valid("")


@given(st.text(max_size=40))
def test_iban_never_raises(value: str) -> None:
    assert iban_valid(value) in (True, False)


def test_ssn_rules() -> None:
    assert us_ssn_valid("123-45-6789")
    assert us_ssn_valid("123 45 6789")
    assert not us_ssn_valid("123-45-6789", allow_examples=False)
    for bad in ("000-12-3456", "666-12-3456", "912-12-3456", "123-00-4567", "123-45-0000"):
        assert not us_ssn_valid(bad), bad
    assert not us_ssn_valid("111-11-1111")
    assert not us_ssn_valid("12-345-678")


@given(st.integers(1, 899), st.integers(1, 99), st.integers(1, 9999))
def test_ssn_accepts_every_issuable_number(area: int, group: int, serial: int) -> None:
    ssn = f"{area:03d}-{group:02d}-{serial:04d}"
    expected = area != 666 and len(set(ssn.replace("-", ""))) > 1
    assert us_ssn_valid(ssn) is expected


def test_nino_rules() -> None:
    assert uk_nino_valid("AB123456C")
    assert uk_nino_valid("ab 12 34 56 d")
    for bad in ("DA123456C", "AO123456C", "GB123456C", "AB123456E", "AB12345C", "A1123456C"):
        assert not uk_nino_valid(bad), bad


def test_entropy_orders_random_above_repetitive() -> None:
    assert shannon_entropy("") == 0.0
    assert shannon_entropy("aaaaaaaa") == 0.0
    assert shannon_entropy("abcdefgh") == 3.0
    assert shannon_entropy("Zx9Qp2LmW8rT4vB7nK3s") > 4.0
