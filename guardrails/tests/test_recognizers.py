"""Rule recognisers: what each finds, what it must not find."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from genai_factory.guardrails.pii.credentials import SecretRecognizer
from genai_factory.guardrails.pii.recognizers import (
    AgeRecognizer,
    CreditCardRecognizer,
    DateOfBirthRecognizer,
    EmailRecognizer,
    IbanRecognizer,
    IpAddressRecognizer,
    PhoneRecognizer,
    Recognizer,
    UkNinoRecognizer,
    UrlRecognizer,
    UsDriverLicenseRecognizer,
    UsSsnRecognizer,
    default_rule_recognizers,
)


def texts(recognizer: Recognizer, text: str) -> list[str]:
    found = recognizer.find(text)
    for d in found:
        assert text[d.start : d.end] == d.text
        assert d.entity_type == recognizer.entity_type
        assert 0.0 < d.score <= 1.0
    return [d.text for d in found]


def test_email() -> None:
    r = EmailRecognizer()
    assert texts(r, "Mail Ann.Lee+x@mail.example.co.uk, or bob@ex.io.") == [
        "Ann.Lee+x@mail.example.co.uk",
        "bob@ex.io",
    ]
    assert texts(r, "no at sign here, and a@b is not an address") == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("call 212-555-0199 today", ["212-555-0199"]),
        ("ring +44 20 7946 0958", ["+44 20 7946 0958"]),
        ("whatsapp 0044 20 7946 0958", ["0044 20 7946 0958"]),
        ("phone: 07700 900123", ["07700 900123"]),
        ("mobile (415) 555-2671", ["(415) 555-2671"]),
        ("tel. 0490 75 40 81", ["0490 75 40 81"]),
        ("the meeting is on 2024-05-17", []),
        ("version 1.2.3 of 12345", []),
        ("order 1234567 shipped", []),
    ],
)
def test_phone(text: str, expected: list[str]) -> None:
    assert texts(PhoneRecognizer(), text) == expected


def test_credit_card_needs_luhn_and_takes_context() -> None:
    r = CreditCardRecognizer()
    assert texts(r, "visa 4111 1111 1111 1111 and 5500-0000-0000-0004") == [
        "4111 1111 1111 1111",
        "5500-0000-0000-0004",
    ]
    assert texts(r, "4111 1111 1111 1112") == []
    # a Luhn-valid number without a known issuer prefix counts only near a context word
    assert texts(r, "ref 9999 9999 9999 9995") == []
    assert texts(r, "card number 9999 9999 9999 9995") == ["9999 9999 9999 9995"]


def test_iban_in_groups_and_followed_by_words() -> None:
    r = IbanRecognizer()
    assert texts(r, "IBAN GB82 WEST 1234 5698 7654 32 please") == ["GB82 WEST 1234 5698 7654 32"]
    assert texts(r, "pay to de89370400440532013000.") == ["de89370400440532013000"]
    assert texts(r, "GB82 WEST 1234 5698 7654 33") == []


def test_ssn_needs_dashes_or_context() -> None:
    r = UsSsnRecognizer()
    assert texts(r, "SSN 123-45-6789") == ["123-45-6789"]
    assert texts(r, "number 078-05-1120 is void? 666-12-3456 never") == ["078-05-1120"]
    assert texts(r, "order 123456789") == []
    assert texts(r, "my social security number is 123456789") == ["123456789"]


def test_nino() -> None:
    assert texts(UkNinoRecognizer(), "NI: AB 12 34 56 C, not QQ123456C") == ["AB 12 34 56 C"]


def test_ip_addresses() -> None:
    r = IpAddressRecognizer()
    assert texts(r, "hosts 10.0.0.1, 256.1.1.1 and 2001:db8::8a2e:370:7334 at 12:30") == [
        "10.0.0.1",
        "2001:db8::8a2e:370:7334",
    ]
    assert texts(r, "version 1.2.3.4.5") == []


def test_urls() -> None:
    r = UrlRecognizer()
    assert texts(r, "see https://example.com/a?b=1, www.test.org. or shop.example.de!") == [
        "https://example.com/a?b=1",
        "www.test.org",
        "shop.example.de",
    ]
    assert texts(r, "file.txt and e.g. this") == []


def test_date_of_birth_needs_context() -> None:
    r = DateOfBirthRecognizer()
    assert texts(r, "I was born on 12/03/1985.") == ["12/03/1985"]
    assert texts(r, "DOB: March 3, 1990") == ["March 3, 1990"]
    assert texts(r, "date of birth 3rd of May 1990") == ["3rd of May 1990"]
    assert texts(r, "The invoice is due 12/03/2025.") == []


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("OPENAI_API_KEY=sk-proj-4f9Ab2cD8eF1gH7iJ3kL5mN0pQ", "secret.openai_key"),
        ("aws AKIAIOSFODNN7EXAMPLE", "secret.aws_access_key"),
        ("token ghp_0123456789abcdefghijklmnopqrstuvwxyzAB", "secret.github_token"),
        ("xoxb-123456789012-abcdefghijkl", "secret.slack_token"),
        ("sk_live_4eC39HqLyjWDarjtT1zdp7dc", "secret.stripe_key"),
        ("AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q", "secret.google_api_key"),
        (
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----",
            "secret.private_key",
        ),
        ("password: hunter2hunter2", "secret.password_assignment"),
        ("use Zx9Qp2LmW8rT4vB7nK3sYt6 to log in", "secret.high_entropy"),
        (
            "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "secret.aws_secret_key",
        ),
    ],
)
def test_secret_formats(text: str, rule: str) -> None:
    found = SecretRecognizer().find(text)
    assert rule in {d.rule_id for d in found}, found
    for d in found:
        assert text[d.start : d.end] == d.text


def test_secret_ignores_words_uuids_and_short_hex() -> None:
    text = (
        "internationalization-and-localization 123e4567-e89b-12d3-a456-426614174000 "
        "commit deadbeef1234 ABCDEFGHIJKLMNOPQRSTUVWX"
    )
    assert SecretRecognizer().find(text) == []


@given(st.text(max_size=200))
def test_no_recognizer_raises_or_returns_a_wrong_span(text: str) -> None:
    for recognizer in default_rule_recognizers():
        for d in recognizer.find(text):
            assert 0 <= d.start < d.end <= len(text)
            assert text[d.start : d.end] == d.text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("This 79 year old patient", ["79"]),
        ("a 19-year-old man", ["19"]),
        ("i'm 31 y/o.", ["31"]),
        ("I'll turn 23.", ["23"]),
        ("age: 44", ["44"]),
        ("I am 5 minutes late", []),
        ("I am 40% sure", []),
        ("a 300 year old oak", []),
    ],
)
def test_age(text: str, expected: list[str]) -> None:
    assert texts(AgeRecognizer(), text) == expected


def test_driver_license_needs_its_context() -> None:
    r = UsDriverLicenseRecognizer()
    assert texts(r, "My driver's license number is F162823540116.") == ["F162823540116"]
    assert texts(r, "DL: 2270-66-1551") == ["2270-66-1551"]
    assert texts(r, "order F162823540116") == []
