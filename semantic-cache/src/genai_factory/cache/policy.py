"""Thresholds learned from feedback, and admission: what is worth caching.

Example:
    >>> from genai_factory.cache.entry import CacheEntry, CacheScope
    >>> from genai_factory.cache.policy import AdmissionPolicy, ThresholdPolicy
    >>> thresholds = ThresholdPolicy(default=0.85, per_namespace={"legal": 0.95})
    >>> entry = CacheEntry(key="k", scope=CacheScope(tenant="t"), prompt="p", response="{}")
    >>> thresholds.for_entry(entry)
    0.85
    >>> thresholds.on_false_hit(entry, similarity=0.91)
    >>> round(thresholds.for_entry(entry), 3)   # raised above the false hit
    0.92
    >>> AdmissionPolicy(min_cost_usd=0.001).admit("k", cost_usd=0.0, latency_ms=5.0)
    (False, 'not worth caching: cost and latency below the minimums')
"""

from __future__ import annotations

from collections import OrderedDict

from genai_factory.cache.entry import CacheEntry

__all__ = ["AdmissionPolicy", "ThresholdPolicy"]


class ThresholdPolicy:
    """The cosine a semantic candidate must reach: global, per namespace, then per entry.

    ``default`` None takes the gate tuned with the packaged verifier model
    (``benchmarks/train_verifier.py``).

    A reported false hit at similarity ``s`` raises the entry's own threshold to ``s + margin``
    (and remembers ``s`` as a floor). A confirmed hit lowers it by ``step_down``, never below
    the namespace threshold minus ``max_drop`` nor below the floor plus ``margin``.
    """

    def __init__(
        self,
        default: float | None = None,
        per_namespace: dict[str, float] | None = None,
        margin: float = 0.01,
        step_down: float = 0.002,
        max_drop: float = 0.03,
    ) -> None:
        if default is None:
            # the cosine gate chosen on dev data together with the packaged verifier model
            from genai_factory.cache.verify import PairModel

            default = PairModel.load().similarity_threshold
        for name, value in {"default": default, **(per_namespace or {})}.items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"threshold {name!r} must be within [0, 1], got {value}")
        self.default = default
        self.per_namespace = dict(per_namespace or {})
        self.margin = margin
        self.step_down = step_down
        self.max_drop = max_drop

    def for_namespace(self, namespace: str) -> float:
        return self.per_namespace.get(namespace, self.default)

    def for_entry(self, entry: CacheEntry) -> float:
        if entry.threshold is not None:
            return entry.threshold
        return self.for_namespace(entry.scope.namespace)

    def on_false_hit(self, entry: CacheEntry, similarity: float) -> None:
        entry.false_hit_floor = max(entry.false_hit_floor, similarity)
        entry.threshold = max(self.for_entry(entry), similarity + self.margin)

    def on_confirmed_hit(self, entry: CacheEntry, similarity: float) -> None:
        base = self.for_namespace(entry.scope.namespace)
        current = self.for_entry(entry)
        lowest = max(base - self.max_drop, entry.false_hit_floor + self.margin)
        if similarity < current:  # a confirmation below the bar says nothing about the bar
            return
        entry.threshold = max(lowest, current - self.step_down)


class AdmissionPolicy:
    """Admit an answer when it is worth keeping: costly or slow enough, and asked often enough.

    ``min_frequency`` counts lookups of the same exact key (a bounded LRU of ``window`` keys);
    ``max_response_chars`` keeps huge answers out of memory.
    """

    def __init__(
        self,
        min_cost_usd: float = 0.0,
        min_latency_ms: float = 0.0,
        min_frequency: int = 1,
        max_response_chars: int = 200_000,
        window: int = 100_000,
    ) -> None:
        self.min_cost_usd = min_cost_usd
        self.min_latency_ms = min_latency_ms
        self.min_frequency = min_frequency
        self.max_response_chars = max_response_chars
        self.window = window
        self._seen: OrderedDict[str, int] = OrderedDict()

    def observe(self, key: str) -> int:
        """Count one request for ``key``; returns how often it has been seen."""
        count = self._seen.pop(key, 0) + 1
        self._seen[key] = count
        while len(self._seen) > self.window:
            self._seen.popitem(last=False)
        return count

    def admit(
        self, key: str, *, cost_usd: float, latency_ms: float, response_chars: int = 0
    ) -> tuple[bool, str]:
        if response_chars > self.max_response_chars:
            return False, "response too large"
        # with no minimum set everything is worth it; otherwise either bar is enough
        bars = [(self.min_cost_usd, cost_usd), (self.min_latency_ms, latency_ms)]
        if any(bar > 0 for bar, _ in bars) and not any(
            bar > 0 and value >= bar for bar, value in bars
        ):
            return False, "not worth caching: cost and latency below the minimums"
        if self.min_frequency > 1 and self._seen.get(key, 0) < self.min_frequency:
            return False, "not asked often enough yet"
        return True, "admitted"
