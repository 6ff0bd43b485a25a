"""Anonymisation: rewrite each detected span by an action, chosen per entity type.

Actions:

- ``redact``: ``[EMAIL_ADDRESS]``
- ``mask``: ``*************.org``-style, keeping ``mask_keep_last`` characters (0 by default)
- ``hash``: ``<EMAIL_ADDRESS#fcmkbgpadhjn>``, a keyed HMAC-SHA256 (in letters a-p), stable for one key
- ``fake``: a realistic replacement from Faker, deterministic for a ``seed`` and value
- ``pseudonymize``: ``<EMAIL_ADDRESS_1>``, recorded in a :class:`PseudonymVault` for restoring

Overlapping detections are merged first, so no character of any detected span survives (except
the ones ``mask_keep_last`` keeps on purpose).

Example:
    >>> from genai_factory.guardrails.detection import Detection
    >>> text = "Mail ann@example.org now"
    >>> found = [Detection("EMAIL_ADDRESS", 5, 20, 0.9, "pii.email", "rules", "ann@example.org")]
    >>> Anonymizer("redact").anonymize(text, found).text
    'Mail [EMAIL_ADDRESS] now'
    >>> Anonymizer("mask", mask_keep_last=4).anonymize(text, found).text
    'Mail ***********.org now'
    >>> vault = PseudonymVault()
    >>> Anonymizer("pseudonymize").anonymize(text, found, vault=vault).text
    'Mail <EMAIL_ADDRESS_1> now'
    >>> vault.restore("Sent to <EMAIL_ADDRESS_1>.")
    'Sent to ann@example.org.'
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, get_args

from genai_factory.guardrails.detection import Detection
from genai_factory.guardrails.pii.vault import PseudonymVault

if TYPE_CHECKING:
    from faker import Faker

__all__ = ["ACTIONS", "Action", "Anonymized", "Anonymizer", "Replacement", "merge_spans"]

Action = Literal["redact", "mask", "hash", "fake", "pseudonymize"]
ACTIONS: tuple[str, ...] = get_args(Action)


@dataclass(frozen=True, slots=True)
class Replacement:
    """One rewritten span: where it was in the input, what replaced it, and where that is now."""

    entity_type: str
    start: int
    end: int
    action: str
    new_start: int
    new_end: int


@dataclass(frozen=True, slots=True)
class Anonymized:
    text: str
    replacements: list[Replacement]


def merge_spans(detections: Sequence[Detection]) -> list[Detection]:
    """Overlapping detections merged into one span labelled by the strongest of them."""
    merged: list[Detection] = []
    for detection in sorted(detections, key=lambda d: (d.start, -d.end)):
        if detection.length <= 0:
            continue
        if merged and detection.start < merged[-1].end:
            last = merged[-1]
            winner = last if last.score >= detection.score else detection
            end = max(last.end, detection.end)
            merged[-1] = Detection(
                winner.entity_type,
                last.start,
                end,
                max(last.score, detection.score),
                winner.rule_id,
                winner.layer,
                "",
            )
        else:
            merged.append(detection)
    return merged


def _fake_generators() -> dict[str, Callable[[Faker], str]]:
    return {
        "PERSON": lambda f: f.name(),
        "EMAIL_ADDRESS": lambda f: f.email(),
        "PHONE_NUMBER": lambda f: f.phone_number(),
        "CREDIT_CARD": lambda f: f.credit_card_number(),
        "IBAN_CODE": lambda f: f.iban(),
        "US_SSN": lambda f: f.ssn(),
        "UK_NINO": lambda f: f.bothify("??######?", letters="ABCEGHJKLMNPRSTWXYZ").upper(),
        "IP_ADDRESS": lambda f: f.ipv4_public(),
        "URL": lambda f: f.url(),
        "LOCATION": lambda f: f.city(),
        "ORGANIZATION": lambda f: f.company(),
        "DATE_OF_BIRTH": lambda f: f.date_of_birth().isoformat(),
        "DATE_TIME": lambda f: f.date(),
        "NRP": lambda f: f.country(),
    }


class Anonymizer:
    """Rewrites detected spans. ``action`` is the default; ``per_entity`` overrides it by type.

    Secrets are redacted unless ``per_entity`` says otherwise: a fake or a placeholder would
    suggest the value is safe to put back.
    """

    def __init__(
        self,
        action: Action = "redact",
        per_entity: Mapping[str, Action] | None = None,
        mask_char: str = "*",
        mask_keep_last: int = 0,
        hash_key: str | None = None,
        seed: int = 0,
        locale: str = "en_US",
    ) -> None:
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}; choose from {ACTIONS}")
        for entity, entity_action in (per_entity or {}).items():
            if entity_action not in ACTIONS:
                raise ValueError(f"unknown action {entity_action!r} for {entity}")
        if len(mask_char) != 1:
            raise ValueError("mask_char must be one character")
        if mask_keep_last < 0:
            raise ValueError("mask_keep_last must be >= 0")
        self.action: Action = action
        self.per_entity: dict[str, Action] = {"SECRET": "redact", **dict(per_entity or {})}
        self.mask_char = mask_char
        self.mask_keep_last = mask_keep_last
        self.hash_key = hash_key
        self._hash_secret = (hash_key or secrets.token_hex(32)).encode()
        self.seed = seed
        self.locale = locale
        self._faker: Faker | None = None
        self._faker_lock = threading.Lock()
        self._generators = _fake_generators()

    def to_params(self) -> dict[str, object]:
        params: dict[str, object] = {
            "action": self.action,
            "per_entity": {
                k: v for k, v in self.per_entity.items() if k != "SECRET" or v != "redact"
            },
            "mask_char": self.mask_char,
            "mask_keep_last": self.mask_keep_last,
            "seed": self.seed,
            "locale": self.locale,
        }
        if self.hash_key is not None:
            params["hash_key"] = self.hash_key
        return params

    def action_for(self, entity_type: str) -> Action:
        return self.per_entity.get(entity_type, self.action)

    def _fake(self, entity_type: str, value: str) -> str:
        generator = self._generators.get(entity_type)
        if generator is None:
            return f"[{entity_type}]"
        with self._faker_lock:
            if self._faker is None:
                from faker import Faker

                self._faker = Faker(self.locale)
            digest = hashlib.sha256(
                f"{self.seed}:{entity_type}:{value}".encode("utf-8", "surrogatepass")
            ).digest()
            self._faker.seed_instance(int.from_bytes(digest[:8], "big"))
            fake = generator(self._faker)
            # a fake that happens to equal the original would leak it: draw again
            for _ in range(3):
                if fake != value:
                    break
                fake = generator(self._faker)
            return fake

    def replacement(self, entity_type: str, value: str, vault: PseudonymVault | None = None) -> str:
        """What ``value`` (an entity of ``entity_type``) becomes under this anonymizer."""
        action = self.action_for(entity_type)
        if action == "redact":
            return f"[{entity_type}]"
        if action == "mask":
            keep = min(self.mask_keep_last, max(0, len(value) - 1))
            head = "".join(
                ch if ch.isspace() else self.mask_char for ch in value[: len(value) - keep]
            )
            return head + value[len(value) - keep :]
        if action == "hash":
            digest = hmac.new(
                self._hash_secret, value.encode("utf-8", "surrogatepass"), hashlib.sha256
            ).digest()
            # letters only, so the token can never look like a number to a recogniser
            letters = "".join(chr(97 + (byte >> 4)) + chr(97 + (byte & 15)) for byte in digest[:6])
            return f"<{entity_type}#{letters}>"
        if action == "fake":
            return self._fake(entity_type, value)
        if vault is None:
            raise ValueError("the pseudonymize action needs a PseudonymVault")
        return vault.placeholder(entity_type, value)

    def anonymize(
        self,
        text: str,
        detections: Sequence[Detection],
        vault: PseudonymVault | None = None,
    ) -> Anonymized:
        """``text`` with every detected span rewritten (overlaps merged first)."""
        pieces: list[str] = []
        replacements: list[Replacement] = []
        cursor = 0
        length = 0
        for span in merge_spans(detections):
            start, end = max(span.start, cursor), min(span.end, len(text))
            if start >= end:
                continue
            pieces.append(text[cursor:start])
            length += start - cursor
            new = self.replacement(span.entity_type, text[start:end], vault)
            pieces.append(new)
            replacements.append(
                Replacement(
                    span.entity_type,
                    start,
                    end,
                    self.action_for(span.entity_type),
                    length,
                    length + len(new),
                )
            )
            length += len(new)
            cursor = end
        pieces.append(text[cursor:])
        return Anonymized("".join(pieces), replacements)
