"""Secrets in text: known API-key formats, PEM private keys, and high-entropy tokens.

Known formats are matched by their published prefixes and lengths (OpenAI ``sk-``, AWS
``AKIA``/``ASIA``, GitHub ``ghp_``/``github_pat_``, Slack ``xox?-``, Stripe ``sk_live_``, Google
``AIza``, JWTs); anything else long, mixed and random-looking (Shannon entropy above a threshold)
is flagged as a generic token, unless it is a plain word, a hex hash that a context word calls a
checksum, or a UUID.

Example:
    >>> [d.rule_id for d in SecretRecognizer().find("key=AKIAIOSFODNN7EXAMPLE")]
    ['secret.aws_access_key']
"""

from __future__ import annotations

import re
from typing import ClassVar

from genai_factory.guardrails.detection import Detection
from genai_factory.guardrails.pii.validators import shannon_entropy

__all__ = ["KNOWN_SECRET_FORMATS", "SecretRecognizer"]

# (rule id, pattern, score). Order matters only for readability: overlaps are resolved later.
KNOWN_SECRET_FORMATS: tuple[tuple[str, str, float], ...] = (
    (
        "secret.private_key",
        r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----[\s\S]*?"
        r"(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|\Z)",
        1.0,
    ),
    ("secret.openai_key", r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}", 0.95),
    ("secret.anthropic_key", r"\bsk-ant-[A-Za-z0-9_-]{20,}", 0.95),
    ("secret.aws_access_key", r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA)[0-9A-Z]{16}\b", 0.95),
    (
        "secret.aws_secret_key",
        r"(?i:aws.{0,20}(?:secret|key).{0,20}?[=:\s\"']+)[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+])",
        0.9,
    ),
    ("secret.github_token", r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})", 0.95),
    ("secret.slack_token", r"\bxox[abposr]-[A-Za-z0-9-]{10,}", 0.95),
    ("secret.slack_webhook", r"https://hooks\.slack\.com/services/[A-Za-z0-9/]+", 0.95),
    ("secret.stripe_key", r"\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}", 0.95),
    ("secret.google_api_key", r"\bAIza[0-9A-Za-z_-]{35}", 0.95),
    ("secret.jwt", r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}", 0.9),
    (
        "secret.password_assignment",
        r"(?i:\b(?:password|passwd|pwd|secret|api[_-]?key|token)\s*[:=]\s*)[\"']?[^\s\"']{6,}",
        0.8,
    ),
)


class SecretRecognizer:
    """Known credential formats plus high-entropy tokens (``entity_type`` SECRET)."""

    entity_type = "SECRET"
    _token: ClassVar[re.Pattern[str]] = re.compile(r"(?<![A-Za-z0-9+/_-])[A-Za-z0-9+/_-]{20,}")
    _uuid: ClassVar[re.Pattern[str]] = re.compile(
        r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE
    )
    _hex: ClassVar[re.Pattern[str]] = re.compile(r"^[0-9a-fA-F]+$")

    def __init__(self, entropy_threshold: float = 4.0, min_token_length: int = 20) -> None:
        self.entropy_threshold = entropy_threshold
        self.min_token_length = min_token_length
        self._known = [
            (rule_id, re.compile(pattern), score)
            for rule_id, pattern, score in KNOWN_SECRET_FORMATS
        ]

    def _looks_random(self, token: str) -> bool:
        if len(token) < self.min_token_length or self._uuid.match(token):
            return False
        classes = sum(
            (
                any(c.islower() for c in token),
                any(c.isupper() for c in token),
                any(c.isdigit() for c in token),
            )
        )
        if self._hex.match(token):
            # hex digests have at most 4 bits per character: judge them on their own scale
            return len(token) >= 32 and shannon_entropy(token) >= 3.5
        return classes >= 3 and shannon_entropy(token) >= self.entropy_threshold

    def find(self, text: str) -> list[Detection]:
        found: list[Detection] = []
        for rule_id, pattern, score in self._known:
            for match in pattern.finditer(text):
                start, value = match.start(), match.group()
                if rule_id == "secret.password_assignment":
                    # flag only the value, so "password:" stays readable
                    head = re.match(r"(?i)[^:=]*[:=]\s*[\"']?", value)
                    offset = head.end() if head else 0
                    start, value = start + offset, value[offset:]
                elif rule_id == "secret.aws_secret_key":
                    tail = re.search(r"[A-Za-z0-9/+]{40}$", value)
                    if tail is None or not self._looks_random(tail.group()):
                        continue
                    start, value = start + tail.start(), tail.group()
                found.append(
                    Detection(
                        self.entity_type, start, start + len(value), score, rule_id, "rules", value
                    )
                )
        for match in self._token.finditer(text):
            token = match.group()
            if any(d.start < match.end() and match.start() < d.end for d in found):
                continue
            if self._looks_random(token):
                found.append(
                    Detection(
                        self.entity_type,
                        match.start(),
                        match.start() + len(token),
                        0.7,
                        "secret.high_entropy",
                        "rules",
                        token,
                    )
                )
        return found
