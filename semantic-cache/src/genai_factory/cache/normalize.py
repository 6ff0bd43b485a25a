"""Text normalisation and stable hashing for cache keys.

Two prompts that differ only in letter case, Unicode form, invisible characters, surrounding
whitespace or trailing punctuation normalise to the same string, so they share an exact key.
Words are never dropped or rewritten: "not", digits and names survive normalisation, which is
what lets the verifier (and the exact tier) tell them apart.

Example:
    >>> from genai_factory.cache.normalize import normalize_prompt, stable_hash
    >>> normalize_prompt("  What is\\tthe  CAPITAL of France?? ")
    'what is the capital of france'
    >>> stable_hash("a", "b") == stable_hash("a", "b") != stable_hash("ab", "")
    True
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from typing import Any

__all__ = ["canonical_json", "normalize_prompt", "stable_hash"]

# zero-width and formatting characters users paste in by accident
_INVISIBLE = re.compile("[\u00ad\u200b-\u200f\u2028-\u202f\u2060-\u206f\ufeff]")
_SPACE = re.compile(r"\s+")
_EDGE_PUNCT = " \t\n.?!;:,\"'`"


def normalize_prompt(text: str) -> str:
    """NFKC, casefold, drop invisible characters, collapse whitespace, trim edge punctuation."""
    text = unicodedata.normalize("NFKC", text)
    text = _INVISIBLE.sub("", text)
    text = _SPACE.sub(" ", text.casefold())
    return text.strip(_EDGE_PUNCT)


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no spaces: equal values always give equal strings."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def stable_hash(*parts: str) -> str:
    """sha256 over length-prefixed parts, so ("ab", "") and ("a", "b") never collide."""
    digest = hashlib.sha256()
    for part in parts:
        raw = part.encode("utf-8")
        digest.update(len(raw).to_bytes(8, "big"))
        digest.update(raw)
    return digest.hexdigest()
