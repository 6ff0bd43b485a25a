"""Rule recognisers: regexes kept loose, validators and context deciding.

Each recogniser is one small class with ``entity_type``, ``rule_id`` and ``find(text)``; none of
them loads a model, so all of them together scan a paragraph in well under a millisecond.
Scores follow one scale: ~0.9 when a checksum or a strict format confirms the match, ~0.5 when
only the shape does, and context words (``"phone"``, ``"SSN"``, ``"born"``) add to the score.

Example:
    >>> [(d.entity_type, d.text) for d in EmailRecognizer().find("write to ann@example.org")]
    [('EMAIL_ADDRESS', 'ann@example.org')]
    >>> [d.text for d in CreditCardRecognizer().find("card 4111-1111-1111-1111, not 4111-1111-1111-1112")]
    ['4111-1111-1111-1111']
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from typing import ClassVar, Protocol, runtime_checkable

import phonenumbers

from genai_factory.guardrails.detection import Detection
from genai_factory.guardrails.pii.validators import (
    iban_valid,
    luhn_valid,
    uk_nino_valid,
    us_ssn_valid,
)

__all__ = [
    "AgeRecognizer",
    "CreditCardRecognizer",
    "DateOfBirthRecognizer",
    "EmailRecognizer",
    "IbanRecognizer",
    "IpAddressRecognizer",
    "PhoneRecognizer",
    "Recognizer",
    "StreetAddressRecognizer",
    "UkNinoRecognizer",
    "UrlRecognizer",
    "UsDriverLicenseRecognizer",
    "UsSsnRecognizer",
    "context_score",
    "default_rule_recognizers",
]

LAYER = "rules"


@runtime_checkable
class Recognizer(Protocol):
    """Finds one kind of entity in a text."""

    entity_type: str

    def find(self, text: str) -> list[Detection]: ...


def context_score(
    text: str, start: int, end: int, words: Iterable[str], *, before: int = 48, after: int = 16
) -> bool:
    """True when one of ``words`` (lower case) appears shortly before or after ``text[start:end]``.

    >>> context_score("my SSN: 123", 8, 11, ["ssn"])
    True
    """
    window = (text[max(0, start - before) : start] + " " + text[end : end + after]).lower()
    return any(word in window for word in words)


def _digit_runs(value: str, min_digits: int, max_digits: int) -> list[tuple[int, str]]:
    """Sub-spans of ``value`` that start and end at group boundaries, longest first.

    A loose pattern can glue two numbers together ("32 4111 1111 1111 1111"); trying the
    contiguous runs of groups recovers the real one.
    """
    groups = [(m.start(), m.end()) for m in re.finditer(r"\d+", value)]
    # a run starts and ends where a number would: not in the middle of "123-45-6789"
    starts = [i for i, (s, _) in enumerate(groups) if s == 0 or value[s - 1] in " \t\n(+"]
    ends = {j for j, (_, e) in enumerate(groups) if e == len(value) or value[e] in " \t\n)"}
    runs: list[tuple[int, str]] = []
    for i in starts:
        digits = 0
        for j in range(i, len(groups)):
            digits += groups[j][1] - groups[j][0]
            if digits > max_digits:
                break
            if digits >= min_digits and j in ends:
                runs.append((groups[i][0], value[groups[i][0] : groups[j][1]]))
    return sorted(runs, key=lambda run: (-len(run[1]), run[0]))


def _detection(entity: str, rule_id: str, match_text: str, start: int, score: float) -> Detection:
    return Detection(
        entity_type=entity,
        start=start,
        end=start + len(match_text),
        score=min(1.0, score),
        rule_id=rule_id,
        layer=LAYER,
        text=match_text,
    )


class EmailRecognizer:
    """E-mail addresses (the common RFC 5322 subset: no quoted local parts)."""

    entity_type = "EMAIL_ADDRESS"
    rule_id = "pii.email"
    _pattern: ClassVar[re.Pattern[str]] = re.compile(
        r"(?<![\w.%+-])[A-Za-z0-9](?:[A-Za-z0-9._%+-]{0,63})@"
        r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-])"
    )

    def find(self, text: str) -> list[Detection]:
        if "@" not in text:
            return []
        return [
            _detection(self.entity_type, self.rule_id, m.group(), m.start(), 0.95)
            for m in self._pattern.finditer(text)
            if ".." not in m.group()
        ]


class PhoneRecognizer:
    """Phone numbers validated by libphonenumber for any of ``regions``.

    International numbers (``+`` or ``00``) are checked against their own country; national
    numbers against each region in turn. A number that is only *possible* (right length, no
    valid range) counts when a context word such as "phone" or "call" is near.
    """

    entity_type = "PHONE_NUMBER"
    rule_id = "pii.phone"
    runs_last = True  # the loosest format: the analyzer runs it on what the others left
    CONTEXT: ClassVar[tuple[str, ...]] = (
        "phone", "call", "tel", "mobile", "cell", "fax", "number", "contact", "reach",
        "whatsapp", "sms", "text me", "dial", "ring", "desk", "office", "landline", "hotline",
    )  # fmt: skip
    _candidate: ClassVar[re.Pattern[str]] = re.compile(
        r"(?<![\w+])(?:\+|00)?\(?\d[\d\s().\-/]{5,}\d(?=$|\W|_|x\d|ext)"
    )
    _extension: ClassVar[re.Pattern[str]] = re.compile(
        r"\s?(?:x|ext\.?|extension)\s?\d{1,6}\b", re.IGNORECASE
    )
    _date_like: ClassVar[re.Pattern[str]] = re.compile(
        r"^\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|^\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}$"
    )

    def __init__(
        self,
        regions: Sequence[str] = ("US", "GB", "DE", "FR", "IN", "CA", "AU", "BR", "IL"),
        context_threshold: float = 0.5,
        max_runs: int = 24,
    ) -> None:
        self.regions = list(regions)
        self.context_threshold = context_threshold
        self.max_runs = max_runs

    def _score(self, candidate: str) -> float:
        international = candidate.startswith(("+", "00"))
        possible = False
        for region in [None] if international else self.regions:
            try:
                number = phonenumbers.parse(
                    "+" + candidate[2:] if candidate.startswith("00") else candidate, region
                )
            except phonenumbers.NumberParseException:
                continue
            if phonenumbers.is_valid_number(number):
                if international:
                    return 0.9
                groups = len(re.findall(r"\d+", candidate))
                # valid in the first region, or formatted like a phone number (3+ groups)
                return 0.8 if region == self.regions[0] or groups >= 3 else 0.45
            possible = possible or phonenumbers.is_possible_number(number)
        return 0.4 if possible else 0.0

    def _piece_score(self, text: str, start: int, piece: str) -> float:
        if self._date_like.match(piece):
            return 0.0
        score = self._score(piece)
        if score > 0.0 and context_score(text, start, start + len(piece), self.CONTEXT):
            score += 0.35
        return score

    def find(self, text: str) -> list[Detection]:
        found: list[Detection] = []
        for match in self._candidate.finditer(text):
            taken: list[tuple[int, int]] = []
            # the loose pattern can glue numbers together: try runs of digit groups, longest first
            for tried, (offset, piece) in enumerate(_digit_runs(match.group(), 7, 15)):
                if tried >= self.max_runs:
                    break
                start = match.start() + offset
                lead = text[max(0, start - 2) : start]
                if lead.endswith("+"):
                    start, piece = start - 1, "+" + piece
                elif lead.endswith("(") and ")" in piece.split("(")[0]:
                    start, piece = start - 1, "(" + piece
                piece = piece.rstrip(" .-/(")
                extension = self._extension.match(text, start + len(piece))
                if extension:
                    piece += extension.group()
                end = start + len(piece)
                if piece.count("(") != piece.count(")") or any(
                    start < e and s < end for s, e in taken
                ):
                    continue
                score = self._piece_score(text, start, piece)
                if score >= self.context_threshold:
                    taken.append((start, end))
                    found.append(_detection(self.entity_type, self.rule_id, piece, start, score))
        return sorted(found, key=lambda d: d.start)


class CreditCardRecognizer:
    """Payment card numbers: 13-19 digits with a known issuer prefix that pass Luhn."""

    entity_type = "CREDIT_CARD"
    rule_id = "pii.credit_card"
    CONTEXT: ClassVar[tuple[str, ...]] = (
        "card", "credit", "debit", "visa", "mastercard", "amex", "cc", "payment",
    )  # fmt: skip
    _pattern: ClassVar[re.Pattern[str]] = re.compile(r"(?<![\d-])\d(?:[ -]?\d){11,}(?![\d-])")
    _issuer: ClassVar[re.Pattern[str]] = re.compile(
        r"^(?:4|5[1-5]|2[2-7]|3[47]|3[068]|35|6011|65|64[4-9]|62|1800|2131|50|5[6-9]|6[0-9])"
    )

    def find(self, text: str) -> list[Detection]:
        found: list[Detection] = []
        for match in self._pattern.finditer(text):
            taken: list[tuple[int, int]] = []
            for offset, piece in _digit_runs(match.group(), 12, 19):
                start = match.start() + offset
                end = start + len(piece)
                if any(start < e and s < end for s, e in taken):
                    continue
                digits = re.sub(r"[ -]", "", piece)
                if not luhn_valid(digits):
                    continue
                known_issuer = bool(self._issuer.match(digits)) and len(digits) >= 13
                score = 0.9 if known_issuer else 0.4
                if context_score(text, start, end, self.CONTEXT):
                    score += 0.3
                if score >= 0.5:
                    taken.append((start, end))
                    found.append(_detection(self.entity_type, self.rule_id, piece, start, score))
        return sorted(found, key=lambda d: d.start)


class IbanRecognizer:
    """IBANs, compact or in groups of four, with the country's length and the mod-97 check."""

    entity_type = "IBAN_CODE"
    rule_id = "pii.iban"
    _pattern: ClassVar[re.Pattern[str]] = re.compile(
        r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}(?:[ ]?[A-Za-z0-9]){11,30}", re.ASCII
    )

    def find(self, text: str) -> list[Detection]:
        found = []
        position = 0
        while (match := self._pattern.search(text, position)) is not None:
            raw = match.group()
            position = match.start() + 1
            # the loose pattern may run into the next word: try the longest valid prefix
            for end in range(len(raw), 14, -1):
                prefix = raw[:end].rstrip()
                if end < len(raw) and raw[end].isalnum() and raw[end - 1].isalnum():
                    continue  # never cut inside a run of characters
                if iban_valid(prefix):
                    found.append(
                        _detection(self.entity_type, self.rule_id, prefix, match.start(), 0.95)
                    )
                    position = match.start() + len(prefix)
                    break
        return found


class UsSsnRecognizer:
    """US Social Security numbers with the SSA's validity rules.

    ``123-45-6789`` style scores high; nine bare digits need a context word ("SSN", "social").
    """

    entity_type = "US_SSN"
    rule_id = "pii.us_ssn"
    CONTEXT: ClassVar[tuple[str, ...]] = ("ssn", "social security", "social sec", "ss#", "ss #")
    _pattern: ClassVar[re.Pattern[str]] = re.compile(
        r"(?<![\d-])(\d{3})([- ]?)(\d{2})\2(\d{4})(?![\d-])"
    )

    def find(self, text: str) -> list[Detection]:
        found = []
        for match in self._pattern.finditer(text):
            if not us_ssn_valid(match.group()):
                continue
            context = context_score(text, match.start(), match.end(), self.CONTEXT)
            score = 0.85 if match.group(2) == "-" else (0.45 if match.group(2) else 0.3)
            if context:
                score += 0.4
            if score >= 0.5:
                found.append(
                    _detection(self.entity_type, self.rule_id, match.group(), match.start(), score)
                )
        return found


class UkNinoRecognizer:
    """UK National Insurance numbers (``AB 12 34 56 C``) with HMRC's prefix rules."""

    entity_type = "UK_NINO"
    rule_id = "pii.uk_nino"
    _pattern: ClassVar[re.Pattern[str]] = re.compile(
        r"(?<![A-Za-z0-9])[A-Za-z]{2}\s?\d{2}\s?\d{2}\s?\d{2}\s?[A-Da-d](?![A-Za-z0-9])", re.ASCII
    )

    def find(self, text: str) -> list[Detection]:
        return [
            _detection(self.entity_type, self.rule_id, m.group(), m.start(), 0.85)
            for m in self._pattern.finditer(text)
            if uk_nino_valid(m.group())
        ]


class IpAddressRecognizer:
    """IPv4 and IPv6 addresses that the standard library parses."""

    entity_type = "IP_ADDRESS"
    rule_id = "pii.ip"
    _v4: ClassVar[re.Pattern[str]] = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.]|\.\d)")
    _v6: ClassVar[re.Pattern[str]] = re.compile(
        r"(?<![0-9A-Fa-f:])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?"
        r"(?![0-9A-Fa-f:])"
    )

    def find(self, text: str) -> list[Detection]:
        found = []
        for match in self._v4.finditer(text):
            try:
                ipaddress.IPv4Address(match.group())
            except ValueError:
                continue
            found.append(
                _detection(self.entity_type, self.rule_id, match.group(), match.start(), 0.85)
            )
        if ":" in text:
            for match in self._v6.finditer(text):
                value = match.group()
                if value.count(":") < 2 or sum(c.isalnum() for c in value) < 4:
                    continue  # "::" or a clock time is not worth flagging
                try:
                    ipaddress.IPv6Address(value)
                except ValueError:
                    continue
                found.append(_detection(self.entity_type, self.rule_id, value, match.start(), 0.85))
        return found


_TLDS = (
    "com|org|net|edu|gov|mil|int|info|biz|io|ai|co|app|dev|me|tv|xyz|online|site|tech|store|"
    "uk|us|ca|de|fr|es|it|nl|be|ch|at|se|no|dk|fi|pl|cz|pt|br|ar|mx|au|nz|jp|cn|in|ru|ie|il|"
    "gr|hu|ro|sk|si|hr|bg|lt|lv|ee|is|lu|cy|mt|tr|za|sg|hk|kr|tw|uy|cl|pe|ve"
)


class UrlRecognizer:
    """URLs with a scheme, ``www.`` hosts, and bare domains under common top-level domains."""

    entity_type = "URL"
    rule_id = "pii.url"
    _pattern: ClassVar[re.Pattern[str]] = re.compile(
        r"\b(?:https?://|ftp://|www\.)[^\s<>\"'`]+"
        rf"|(?<![@\w.-])(?:[A-Za-z0-9](?:[A-Za-z0-9-]{{0,61}}[A-Za-z0-9])?\.)+(?:{_TLDS})\b"
        r"(?![@\w-])(?:/[^\s<>\"'`]*)?",
        re.IGNORECASE,
    )

    def find(self, text: str) -> list[Detection]:
        found = []
        for match in self._pattern.finditer(text):
            value = match.group().rstrip(".,;:!?)]}'\"")
            if value.lower().rstrip("/") in {"http:", "https:", "www", "ftp:"}:
                continue
            has_scheme = "://" in value or value.lower().startswith("www.")
            found.append(
                _detection(
                    self.entity_type,
                    self.rule_id,
                    value,
                    match.start(),
                    0.85 if has_scheme else 0.6,
                )
            )
        return found


_MONTHS = (
    "jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|"
    "sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?"
)


class DateOfBirthRecognizer:
    """Dates that a context word ("born", "DOB", "date of birth", "birthday") marks as a birth date."""

    entity_type = "DATE_OF_BIRTH"
    rule_id = "pii.date_of_birth"
    CONTEXT: ClassVar[tuple[str, ...]] = (
        "born", "dob", "d.o.b", "date of birth", "birth date", "birthdate", "birthday", "b-day",
    )  # fmt: skip
    _pattern: ClassVar[re.Pattern[str]] = re.compile(
        r"(?<!\d)(?:\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.](?:\d{4}|\d{2}))(?!\d)"
        rf"|\b(?:\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?(?:{_MONTHS})\.?,?\s+\d{{4}}"
        rf"|(?:{_MONTHS})\.?\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}})\b",
        re.IGNORECASE,
    )

    def find(self, text: str) -> list[Detection]:
        return [
            _detection(self.entity_type, self.rule_id, m.group(), m.start(), 0.85)
            for m in self._pattern.finditer(text)
            if context_score(text, m.start(), m.end(), self.CONTEXT, before=40, after=8)
        ]


_STREET_SUFFIX = (
    "street|st|road|rd|avenue|ave|drive|dr|lane|ln|terrace|court|ct|place|pl|boulevard|blvd|way|"
    "square|sq|parkway|pkwy|highway|hwy|crescent|close|gardens|grove|hill|row|walk|alley|"
    "strasse|straße|str|weg|gasse|platz|allee|gade|vej|vägen|gatan|katu|tie|laan|straat|plein|"
    "ulica|utca|ut|cesta"
)
_STREET_PREFIX = "rua|via|rue|calle|avenida|av|viale|piazza|plaza|chemin|boulevard|strada"
# street words written as the end of one compound word: "Søndergade", "Kiannonkatu"
_COMPOUND_SUFFIX = "strasse|straße|gasse|platz|allee|gade|vej|vägen|gatan|katu|tie|laan|straat|weg"


class StreetAddressRecognizer:
    """Street addresses: a house number next to a street name with a known street word."""

    entity_type = "STREET_ADDRESS"
    rule_id = "pii.street_address"
    _pattern: ClassVar[re.Pattern[str]] = re.compile(
        rf"\b\d{{1,6}}[A-Za-z]?\s+(?:[^\W\d_][\w'.-]*\s+){{0,4}}?(?:{_STREET_SUFFIX})\b\.?"
        r"(?:\s+\d{1,5}[A-Za-z]?\b)?"
        rf"|\b(?:{_STREET_PREFIX})\s+(?:[^\W\d_][\w'.-]*\s+){{0,4}}?[^\W\d_][\w'.-]*,?\s+\d{{1,5}}[A-Za-z]?\b"
        rf"|\b(?:[A-ZÀ-ÖØ-Þ][\w'.-]*\s+){{1,3}}(?:{_STREET_SUFFIX})\.?\s+\d{{1,5}}[A-Za-z]?\b"
        rf"|\b[^\W\d_][\w'-]{{2,}}(?:{_COMPOUND_SUFFIX})\s+\d{{1,5}}[A-Za-z]?\b",
        re.IGNORECASE,
    )
    _unit: ClassVar[re.Pattern[str]] = re.compile(
        r"[,\s]+(?:apt|apartment|suite|ste|unit|flat|floor|fl)\.?\s*#?\s*\w{1,6}", re.IGNORECASE
    )

    def find(self, text: str) -> list[Detection]:
        found = []
        for match in self._pattern.finditer(text):
            end = match.end()
            while unit := self._unit.match(text, end):
                end = unit.end()
            value = text[match.start() : end]
            found.append(_detection(self.entity_type, self.rule_id, value, match.start(), 0.7))
        return found


class UsDriverLicenseRecognizer:
    """US driver's licence numbers, which have no checksum: only right after a context phrase."""

    entity_type = "US_DRIVER_LICENSE"
    rule_id = "pii.us_driver_license"
    _pattern: ClassVar[re.Pattern[str]] = re.compile(
        r"\b(?:driver'?s?\s+licen[cs]e|driving\s+licen[cs]e|DL)\s*(?:number|no\.?|num|#|id)?"
        r"\s*(?:is|:|=|-)?\s*(?P<value>[A-Z]?\d[\dA-Z-]{3,18}\d|[A-Z]\d{4,14})\b",
        re.IGNORECASE,
    )

    def find(self, text: str) -> list[Detection]:
        return [
            _detection(self.entity_type, self.rule_id, m.group("value"), m.start("value"), 0.8)
            for m in self._pattern.finditer(text)
        ]


class AgeRecognizer:
    """Ages stated as such: "42 years old", "aged 42", "42 y/o", "turned 42", "age: 42"."""

    entity_type = "AGE"
    rule_id = "pii.age"
    _pattern: ClassVar[re.Pattern[str]] = re.compile(
        r"\b(?P<a>\d{1,3})(?:\s*|-)(?:years?|yrs?)(?:\s*|-)old\b"
        r"|\b(?P<b>\d{1,3})\s*y/?o\b"
        r"|\b(?:aged|age\s*[:=]?|turn(?:ed|s|ing)?|i'?m|i\s+am)\s+(?P<c>\d{1,3})\b(?!\d|[.,]\d|:|%)(?!\s*(?:percent|am|pm|minutes?|mins?|hours?|hrs?|days?|weeks?|months?|times?|"
        r"euros?|dollars?|km|miles?|kg|lbs?|pounds?|feet|ft|cm|m|of|in|on|at|to|and|or|o'?clock)\b)",
        re.IGNORECASE,
    )

    def find(self, text: str) -> list[Detection]:
        found = []
        for match in self._pattern.finditer(text):
            group = next(g for g in ("a", "b", "c") if match.group(g) is not None)
            if int(match.group(group)) > 125:
                continue
            score = 0.85 if group != "c" else 0.6
            found.append(
                _detection(
                    self.entity_type, self.rule_id, match.group(group), match.start(group), score
                )
            )
        return found


def default_rule_recognizers() -> list[Recognizer]:
    """Every rule recogniser of this module with its defaults (secrets included)."""
    from genai_factory.guardrails.pii.credentials import SecretRecognizer

    return [
        EmailRecognizer(),
        PhoneRecognizer(),
        CreditCardRecognizer(),
        IbanRecognizer(),
        UsSsnRecognizer(),
        UkNinoRecognizer(),
        IpAddressRecognizer(),
        UrlRecognizer(),
        DateOfBirthRecognizer(),
        UsDriverLicenseRecognizer(),
        AgeRecognizer(),
        StreetAddressRecognizer(),
        SecretRecognizer(),
    ]
