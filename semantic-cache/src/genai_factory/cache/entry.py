"""Cache scopes, entries and the filters that invalidate them.

A :class:`CacheScope` is everything besides the prompt that decides an answer: tenant, namespace,
model, prompt version and hashes of the system prompt, tools, sampling settings and earlier turns.
Lookups only ever compare prompts inside one scope, so an entry never crosses tenants.

Example:
    >>> from genai_factory.cache.entry import CacheScope, exact_key
    >>> a = CacheScope(tenant="acme", model="smollm2")
    >>> b = CacheScope(tenant="globex", model="smollm2")
    >>> a.key() == b.key()
    False
    >>> exact_key(a, "What is 2+2?") == exact_key(a, "  what is 2+2 ")
    True
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field, fields
from functools import lru_cache
from typing import Any

import numpy as np

from genai_factory.cache.embedding import Vector
from genai_factory.cache.normalize import normalize_prompt, stable_hash

__all__ = ["CacheEntry", "CacheScope", "InvalidationFilter", "exact_key"]


@dataclass(frozen=True, slots=True)
class CacheScope:
    """The partition a prompt is looked up in. Equal scopes, equal ``key()``."""

    tenant: str
    namespace: str = "default"
    model: str = ""
    prompt_version: str = ""
    system_hash: str = ""
    tools_hash: str = ""
    sampling_hash: str = ""
    context_hash: str = ""

    def key(self) -> str:
        return _scope_key(self)

    def as_dict(self) -> dict[str, str]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@lru_cache(maxsize=4096)
def _scope_key(scope: CacheScope) -> str:
    # memoised: a lookup needs the key two or three times and sha256 over nine parts is not free
    return stable_hash(
        "scope/v1",
        scope.tenant,
        scope.namespace,
        scope.model,
        scope.prompt_version,
        scope.system_hash,
        scope.tools_hash,
        scope.sampling_hash,
        scope.context_hash,
    )


def exact_key(scope: CacheScope, prompt: str) -> str:
    """The exact-tier key: the scope plus the normalised prompt."""
    return stable_hash("exact/v1", scope.key(), normalize_prompt(prompt))


@dataclass(slots=True)
class CacheEntry:
    """One cached answer with what is needed to find, verify, price and invalidate it."""

    key: str
    scope: CacheScope
    prompt: str
    response: str
    vector: Vector | None = None
    embedding_model_id: str = ""
    created_at: float = field(default_factory=time.time)
    expires_at: float | None = None
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    tags: tuple[str, ...] = ()
    hits: int = 0
    last_access: float = field(default_factory=time.time)
    threshold: float | None = None  # learned from feedback; None = the namespace/global one
    false_hit_floor: float = 0.0  # the highest similarity ever reported as a false hit
    answer_vector: Vector | None = None

    def expired(self, now: float | None = None) -> bool:
        return self.expires_at is not None and (now or time.time()) >= self.expires_at

    @property
    def size_bytes(self) -> int:
        """Approximate memory: texts, response and vectors."""
        size = len(self.prompt) + len(self.response) + 200
        for vector in (self.vector, self.answer_vector):
            if vector is not None:
                size += int(vector.nbytes)
        return size

    def to_record(self) -> dict[str, Any]:
        """A JSON-able dict (vectors as base64 float32) for Redis, SQL and logs."""
        return {
            "key": self.key,
            "scope": self.scope.as_dict(),
            "prompt": self.prompt,
            "response": self.response,
            "vector": _b64(self.vector),
            "embedding_model_id": self.embedding_model_id,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "cost_usd": self.cost_usd,
            "latency_ms": self.latency_ms,
            "tags": list(self.tags),
            "hits": self.hits,
            "last_access": self.last_access,
            "threshold": self.threshold,
            "false_hit_floor": self.false_hit_floor,
            "answer_vector": _b64(self.answer_vector),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_record(), separators=(",", ":"))

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> CacheEntry:
        return cls(
            key=str(record["key"]),
            scope=CacheScope(**record["scope"]),
            prompt=str(record["prompt"]),
            response=str(record["response"]),
            vector=_unb64(record.get("vector")),
            embedding_model_id=str(record.get("embedding_model_id", "")),
            created_at=float(record["created_at"]),
            expires_at=None if record.get("expires_at") is None else float(record["expires_at"]),
            cost_usd=float(record.get("cost_usd", 0.0)),
            latency_ms=float(record.get("latency_ms", 0.0)),
            tags=tuple(record.get("tags", ())),
            hits=int(record.get("hits", 0)),
            last_access=float(record.get("last_access", record["created_at"])),
            threshold=None if record.get("threshold") is None else float(record["threshold"]),
            false_hit_floor=float(record.get("false_hit_floor", 0.0)),
            answer_vector=_unb64(record.get("answer_vector")),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> CacheEntry:
        return cls.from_record(json.loads(text))


def _b64(vector: Vector | None) -> str | None:
    if vector is None:
        return None
    return base64.b64encode(np.ascontiguousarray(vector, dtype=np.float32).tobytes()).decode()


def _unb64(text: str | None) -> Vector | None:
    if not text:
        return None
    return np.frombuffer(base64.b64decode(text), dtype=np.float32).copy()


@dataclass(frozen=True, slots=True)
class InvalidationFilter:
    """Which entries a purge removes: every given field must match (all None = everything).

    ``tag`` matches entries carrying that tag; ``created_before`` is an epoch time;
    ``*_not`` fields match everything except that value (retire all but the current version).
    """

    tenant: str | None = None
    namespace: str | None = None
    model: str | None = None
    prompt_version: str | None = None
    tag: str | None = None
    created_before: float | None = None
    embedding_model_id_not: str | None = None
    model_not: str | None = None
    prompt_version_not: str | None = None

    def matches(self, entry: CacheEntry) -> bool:
        scope = entry.scope
        checks = (
            self.tenant is None or scope.tenant == self.tenant,
            self.namespace is None or scope.namespace == self.namespace,
            self.model is None or scope.model == self.model,
            self.prompt_version is None or scope.prompt_version == self.prompt_version,
            self.tag is None or self.tag in entry.tags,
            self.created_before is None or entry.created_at < self.created_before,
            self.embedding_model_id_not is None
            or entry.embedding_model_id != self.embedding_model_id_not,
            self.model_not is None or scope.model != self.model_not,
            self.prompt_version_not is None or scope.prompt_version != self.prompt_version_not,
        )
        return all(checks)

    def as_dict(self) -> dict[str, Any]:
        return {
            f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None
        }
