"""Checksums and validity rules that turn "looks like a number" into "is one".

Each validator takes the candidate as found in text (separators allowed) and answers a bool, so
a recogniser can keep a regex loose and let the arithmetic decide.

Example:
    >>> luhn_valid("4111 1111 1111 1111"), luhn_valid("4111 1111 1111 1112")
    (True, False)
    >>> iban_valid("GB82 WEST 1234 5698 7654 32"), iban_valid("GB82 WEST 1234 5698 7654 33")
    (True, False)
    >>> us_ssn_valid("123-45-6789"), us_ssn_valid("666-45-6789")
    (True, False)
    >>> uk_nino_valid("AB 12 34 56 C"), uk_nino_valid("QQ 12 34 56 C")
    (True, False)
"""

from __future__ import annotations

import math
import re
from collections import Counter

__all__ = [
    "IBAN_LENGTHS",
    "iban_valid",
    "luhn_valid",
    "shannon_entropy",
    "uk_nino_valid",
    "us_ssn_valid",
]

_SEPARATORS = re.compile(r"[\s\-.]")

# Length of a full IBAN per country (ISO 13616 registry), so "DE" with 21 characters is rejected.
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22,
    "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32,
    "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24,
    "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31,
    "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28, "TL": 23,
    "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip


def _compact(value: str) -> str:
    return _SEPARATORS.sub("", value)


def luhn_valid(number: str) -> bool:
    """True when ``number`` (digits, spaces and dashes allowed) passes the Luhn checksum."""
    digits = _compact(number)
    if len(digits) < 2 or not digits.isascii() or not digits.isdigit():
        return False
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if position % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def iban_valid(iban: str) -> bool:
    """True for an IBAN of a known country with its registered length and a mod-97 remainder of 1."""
    compact = _compact(iban).upper()
    if len(compact) < 15 or not compact.isascii() or not compact.isalnum():
        return False
    country, check = compact[:2], compact[2:4]
    if IBAN_LENGTHS.get(country) != len(compact) or not check.isdigit():
        return False
    rearranged = compact[4:] + compact[:4]
    remainder = 0
    for char in rearranged:
        # letters count as two digits (A=10 ... Z=35); fold as we go to keep numbers small
        chunk = str(int(char, 36))
        remainder = int(str(remainder) + chunk) % 97
    return remainder == 1


# Numbers the SSA says were never issued, or that were published as examples and are void.
_VOID_SSNS = frozenset({"078051120", "219099999", "123456789"})


def us_ssn_valid(ssn: str, *, allow_examples: bool = True) -> bool:
    """US Social Security number rules: area not 000/666/9xx, group not 00, serial not 0000.

    ``allow_examples=False`` also rejects numbers published as examples (e.g. 078-05-1120).
    """
    digits = _compact(ssn)
    if len(digits) != 9 or not digits.isascii() or not digits.isdigit():
        return False
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    if area in {"000", "666"} or area.startswith("9") or group == "00" or serial == "0000":
        return False
    if len(set(digits)) == 1:
        return False
    return allow_examples or digits not in _VOID_SSNS


_NINO_BAD_FIRST = frozenset("DFIQUV")
_NINO_BAD_SECOND = frozenset("DFIOQUV")
_NINO_BAD_PREFIXES = frozenset({"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"})


def uk_nino_valid(nino: str) -> bool:
    """UK National Insurance number: two allowed letters, six digits, suffix A-D."""
    compact = _compact(nino).upper()
    if len(compact) != 9 or not compact.isascii():
        return False
    prefix, digits, suffix = compact[:2], compact[2:8], compact[8]
    if not prefix.isalpha() or not digits.isdigit() or suffix not in "ABCD":
        return False
    if prefix[0] in _NINO_BAD_FIRST or prefix[1] in _NINO_BAD_SECOND:
        return False
    return prefix not in _NINO_BAD_PREFIXES


def shannon_entropy(value: str) -> float:
    """Bits of entropy per character of ``value`` (0 for an empty string).

    >>> round(shannon_entropy("aaaa"), 2), round(shannon_entropy("abcd"), 2)
    (0.0, 2.0)
    """
    if not value:
        return 0.0
    counts = Counter(value)
    length = len(value)
    return max(0.0, -sum((n / length) * math.log2(n / length) for n in counts.values()))
