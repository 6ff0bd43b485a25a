"""What may leave the process: credentials and personal data are masked before export or logging.

A :class:`ContentRedactor` is the default ``redact`` hook for captured message content and the
log filter's engine. It applies the shared logging :class:`~genai_factory.shared.logging.RedactionFilter`
(registered secrets and credential shapes) and then masks personal data: e-mail addresses, phone
numbers, payment card numbers (Luhn-checked, so order ids survive) and IPv4 addresses. Any
``Callable[[str], str]`` can replace it, e.g. a guardrails PII guard wrapped in a function.

Example:
    >>> from genai_factory.observability.redaction import ContentRedactor
    >>> redact = ContentRedactor(secrets=["hunter2"])
    >>> redact("mail bob@example.com, card 4111 1111 1111 1111, pw hunter2")
    'mail [EMAIL], card [CARD], pw [REDACTED]'
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from typing import Any

from genai_factory.shared.logging import RedactionFilter

__all__ = ["ContentRedactor", "PIIRedactionFilter", "Redactor"]

Redactor = Callable[[str], str]

_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,24}\b")
# 13-19 digits, optionally grouped by single spaces or dashes.
_CARD = re.compile(r"\b\d(?:[ -]?\d){12,18}\b")
# International (+CC ...) or grouped national numbers; a bare run of digits is not a phone.
_PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[ .-]?(?:\(?\d{1,4}\)?[ .-]?){1,4}\d{2,4}"
    r"|\(?\d{2,4}\)?[ .-]\d{3,4}[ .-]\d{3,4})\b"
)
_IPV4 = re.compile(r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b")


def _luhn_ok(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _mask_card(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    return "[CARD]" if _luhn_ok(digits) else match.group(0)


def _mask_phone(match: re.Match[str]) -> str:
    digits = sum(char.isdigit() for char in match.group(0))
    return "[PHONE]" if 8 <= digits <= 15 else match.group(0)


class ContentRedactor:
    """Masks secrets, credential shapes and personal data in a string; idempotent.

    Args:
        secrets: exact values to mask (e.g. every SecretStr from settings).
        pii: also mask e-mails, card numbers, phone numbers and IPv4 addresses.
    """

    def __init__(self, secrets: Iterable[str] = (), pii: bool = True) -> None:
        self.secrets = list(secrets)
        self.pii = pii
        self._credentials = RedactionFilter(self.secrets)

    def to_params(self) -> dict[str, Any]:
        # Secrets are never serialised into a config dump.
        return {"pii": self.pii}

    def __call__(self, text: str) -> str:
        text = self._credentials.redact(text)
        if self.pii:
            text = _EMAIL.sub("[EMAIL]", text)
            text = _CARD.sub(_mask_card, text)
            text = _PHONE.sub(_mask_phone, text)
            text = _IPV4.sub("[IP]", text)
        return text


class PIIRedactionFilter(logging.Filter):
    """A logging filter that masks personal data in the message and string extras of a record.

    Runs beside the shared RedactionFilter (which handles secrets); put it on the handler.
    """

    _STD = frozenset(vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None))) | {
        "message",
        "asctime",
        "taskName",
    }

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self._redact = redactor or ContentRedactor()

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self._redact(record.getMessage())
        record.args = None
        for key, value in list(vars(record).items()):
            if key not in self._STD and isinstance(value, str):
                setattr(record, key, self._redact(value))
        return True
