"""Reversible pseudonymisation: placeholders in, originals back out.

A :class:`PseudonymVault` lives for one request. It hands out ``<PERSON_1>``-style placeholders
(the same value always gets the same placeholder), and :meth:`PseudonymVault.restore` puts the
originals back into the model's answer, so the model never sees the data and the user still
reads it. :class:`VaultStore` keeps vaults between the input and the output check of a request,
bounded in size and age, per guard instance (no global state).

Example:
    >>> vault = PseudonymVault()
    >>> vault.placeholder("PERSON", "Ada Lovelace")
    '<PERSON_1>'
    >>> vault.placeholder("PERSON", "Ada Lovelace"), vault.placeholder("PERSON", "Alan Turing")
    ('<PERSON_1>', '<PERSON_2>')
    >>> vault.restore("<PERSON_2> met <PERSON_1>.")
    'Alan Turing met Ada Lovelace.'
"""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict

__all__ = ["PseudonymVault", "VaultStore"]

_PLACEHOLDER = re.compile(r"<([A-Z][A-Z_]*?)_(\d+)>")


class PseudonymVault:
    """Maps placeholders to the values they stand for, for one request."""

    def __init__(self) -> None:
        self._by_value: dict[tuple[str, str], str] = {}
        self._by_placeholder: dict[str, str] = {}
        self._counters: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._by_placeholder)

    def placeholder(self, entity_type: str, value: str) -> str:
        """The placeholder for ``value`` (a new one the first time it is seen)."""
        key = (entity_type, value)
        existing = self._by_value.get(key)
        if existing is not None:
            return existing
        label = re.sub(r"[^A-Z_]", "_", entity_type.upper()) or "ENTITY"
        self._counters[label] = self._counters.get(label, 0) + 1
        placeholder = f"<{label}_{self._counters[label]}>"
        self._by_value[key] = placeholder
        self._by_placeholder[placeholder] = value
        return placeholder

    def original(self, placeholder: str) -> str | None:
        return self._by_placeholder.get(placeholder)

    def mapping(self) -> dict[str, str]:
        """A copy of placeholder -> original."""
        return dict(self._by_placeholder)

    def restore(self, text: str) -> str:
        """``text`` with every placeholder this vault issued replaced by its original.

        Placeholders this vault did not issue are left as they are.
        """
        if not self._by_placeholder:
            return text
        return _PLACEHOLDER.sub(lambda m: self._by_placeholder.get(m.group(), m.group()), text)

    def placeholder_spans(self, text: str) -> list[tuple[int, int]]:
        """Where this vault's placeholders occur in ``text``."""
        return [
            (m.start(), m.end())
            for m in _PLACEHOLDER.finditer(text)
            if m.group() in self._by_placeholder
        ]


class VaultStore:
    """Vaults by request key, at most ``max_entries`` and ``ttl_s`` seconds old (thread-safe)."""

    def __init__(self, max_entries: int = 10_000, ttl_s: float = 600.0) -> None:
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._items: OrderedDict[str, tuple[float, PseudonymVault]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, key: str, vault: PseudonymVault) -> None:
        now = time.monotonic()
        with self._lock:
            self._items[key] = (now, vault)
            self._items.move_to_end(key)
            self._evict(now)

    def get(self, key: str) -> PseudonymVault | None:
        now = time.monotonic()
        with self._lock:
            self._evict(now)
            item = self._items.get(key)
            return item[1] if item else None

    def pop(self, key: str) -> PseudonymVault | None:
        with self._lock:
            item = self._items.pop(key, None)
            return item[1] if item else None

    def _evict(self, now: float) -> None:
        while self._items and len(self._items) > self.max_entries:
            self._items.popitem(last=False)
        while self._items:
            first_key = next(iter(self._items))
            stamp, _ = self._items[first_key]
            if now - stamp <= self.ttl_s:
                break
            del self._items[first_key]
