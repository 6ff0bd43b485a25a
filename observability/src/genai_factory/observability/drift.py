"""Output drift: answer length, refusal rate and embeddings, recent window vs a baseline window.

:class:`OutputDriftMonitor` keeps a frozen baseline (the first ``baseline_size`` outputs, or one
you set) and a sliding window of recent outputs. Every ``check_every`` outputs it compares:

* **length**: the population stability index (PSI) of answer lengths, binned at the baseline's
  deciles (PSI > 0.2 is the usual "significant shift");
* **refusal rate**: the change in the share of answers that look like refusals;
* **embeddings** (vectors you pass in; no model needed here): the cosine distance between the
  two windows' mean vectors, and the PSI of each answer's similarity to the baseline centroid.

A signal raises a :class:`~genai_factory.observability.events.DriftEvent` when it crosses its
threshold, once, and re-arms when it falls back below.

Example:
    >>> import asyncio
    >>> monitor = OutputDriftMonitor(baseline_size=50, window_size=50, check_every=50)
    >>> short = [f"Paris is the capital, answer {i}." for i in range(50)]
    >>> refusals = ["I'm sorry, but I can't help with that request."] * 50
    >>> async def run():
    ...     for text in short:
    ...         await monitor.observe(text)
    ...     events = []
    ...     for text in refusals:
    ...         events += await monitor.observe(text)
    ...     return sorted(e.signal for e in events)
    >>> asyncio.run(run())
    ['length', 'refusal_rate']
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from genai_factory.observability.events import DriftEvent, EventBus

__all__ = ["DEFAULT_REFUSAL_PATTERNS", "OutputDriftMonitor", "cosine_shift", "psi"]

DEFAULT_REFUSAL_PATTERNS: tuple[str, ...] = (
    r"\bI(?:'m| am) (?:sorry|afraid)\b.{0,40}\b(?:can(?:no|')t|unable|not able)\b",
    r"\bI (?:can(?:no|')t|won't|will not|am unable to|am not able to) (?:help|assist|provide|comply|do that)",
    r"\bas an AI(?: language model)?\b",
    r"\bI must (?:decline|refuse)\b",
    r"\b(?:against|violates?) (?:my|our|the) (?:guidelines|policy|policies)\b",
)

_EPS = 1e-4

Signal = Literal["length", "refusal_rate", "embedding"]


def psi(baseline: npt.ArrayLike, current: npt.ArrayLike, bins: int = 10) -> float:
    """Population stability index of ``current`` against ``baseline`` (bins at its quantiles).

    >>> round(psi([1, 2, 3, 4, 5] * 20, [1, 2, 3, 4, 5] * 20), 6)
    0.0
    >>> psi(range(100), range(50, 150)) > 0.2
    True
    """
    base = np.asarray(baseline, dtype=float)
    cur = np.asarray(current, dtype=float)
    if base.size == 0 or cur.size == 0:
        return 0.0
    edges = np.unique(np.quantile(base, np.linspace(0, 1, bins + 1)[1:-1]))
    base_share = np.bincount(np.searchsorted(edges, base, side="right"), minlength=edges.size + 1)
    cur_share = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=edges.size + 1)
    b = np.clip(base_share / base.size, _EPS, None)
    c = np.clip(cur_share / cur.size, _EPS, None)
    return float(np.sum((c - b) * np.log(c / b)))


def cosine_shift(baseline: npt.ArrayLike, current: npt.ArrayLike) -> float:
    """1 - cosine similarity of the two sets' mean vectors (0: same direction, up to 2).

    >>> cosine_shift([[1.0, 0.0], [0.9, 0.1]], [[1.0, 0.05]]) < 0.01
    True
    """
    b = np.asarray(baseline, dtype=float).mean(axis=0)
    c = np.asarray(current, dtype=float).mean(axis=0)
    denominator = float(np.linalg.norm(b) * np.linalg.norm(c))
    if denominator == 0.0:
        return 0.0
    return float(1.0 - np.dot(b, c) / denominator)


class OutputDriftMonitor:
    """Detects drift in model outputs and publishes DriftEvents.

    Args:
        name: names the monitor in events (e.g. the model or route watched).
        bus: where events go (None: only returned).
        baseline_size: outputs in the baseline (the first ones seen, unless set explicitly).
        window_size: outputs in the recent window compared against it.
        check_every: outputs between checks once the window is full.
        psi_threshold: PSI at which length or embedding-similarity drift fires.
        refusal_delta: absolute change in refusal rate that fires (0.1 = ten points).
        cosine_threshold: centroid cosine distance that fires.
        min_length_change: length drift also needs the median length to move by this fraction
            (PSI alone over-reacts to a one-character shift in tightly clustered lengths).
        refusal_patterns: regexes (case-insensitive) that mark an answer as a refusal.
    """

    def __init__(
        self,
        name: str = "outputs",
        bus: EventBus | None = None,
        baseline_size: int = 500,
        window_size: int = 200,
        check_every: int = 50,
        psi_threshold: float = 0.2,
        refusal_delta: float = 0.1,
        cosine_threshold: float = 0.05,
        min_length_change: float = 0.15,
        refusal_patterns: Sequence[str] = DEFAULT_REFUSAL_PATTERNS,
    ) -> None:
        if baseline_size < 10 or window_size < 10 or check_every < 1:
            raise ValueError("baseline_size and window_size must be >= 10, check_every >= 1")
        self.name = name
        self.bus = bus
        self.baseline_size = baseline_size
        self.window_size = window_size
        self.check_every = check_every
        self.psi_threshold = psi_threshold
        self.refusal_delta = refusal_delta
        self.cosine_threshold = cosine_threshold
        self.min_length_change = min_length_change
        self.refusal_patterns = list(refusal_patterns)
        self._refusal = re.compile("|".join(f"(?:{p})" for p in self.refusal_patterns), re.I | re.S)
        self._baseline_lengths: list[int] = []
        self._baseline_refusals: list[bool] = []
        self._baseline_vectors: list[npt.NDArray[np.float64]] = []
        self._frozen = False
        self._lengths: deque[int] = deque(maxlen=window_size)
        self._refusals: deque[bool] = deque(maxlen=window_size)
        self._vectors: deque[npt.NDArray[np.float64]] = deque(maxlen=window_size)
        self._since_check = 0
        self._drifting: set[str] = set()

    def to_params(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "baseline_size": self.baseline_size,
            "window_size": self.window_size,
            "check_every": self.check_every,
            "psi_threshold": self.psi_threshold,
            "refusal_delta": self.refusal_delta,
            "cosine_threshold": self.cosine_threshold,
            "min_length_change": self.min_length_change,
            "refusal_patterns": self.refusal_patterns,
        }

    def is_refusal(self, text: str) -> bool:
        return self._refusal.search(text[:2000]) is not None

    def set_baseline(
        self, outputs: Sequence[str], embeddings: Sequence[Sequence[float]] | None = None
    ) -> None:
        """Replace the baseline with these outputs (and their embeddings) and freeze it."""
        if embeddings is not None and len(embeddings) != len(outputs):
            raise ValueError("need one embedding per output")
        self._baseline_lengths = [len(text) for text in outputs]
        self._baseline_refusals = [self.is_refusal(text) for text in outputs]
        self._baseline_vectors = [np.asarray(v, dtype=float) for v in embeddings or ()]
        self._frozen = True
        self._drifting.clear()

    @property
    def baseline_ready(self) -> bool:
        return self._frozen

    async def observe(
        self, text: str, embedding: Sequence[float] | None = None
    ) -> list[DriftEvent]:
        """Add one output; returns (and publishes) the drift events this output triggered."""
        vector = None if embedding is None else np.asarray(embedding, dtype=float)
        if not self._frozen:
            self._baseline_lengths.append(len(text))
            self._baseline_refusals.append(self.is_refusal(text))
            if vector is not None:
                self._baseline_vectors.append(vector)
            self._frozen = len(self._baseline_lengths) >= self.baseline_size
            return []
        self._lengths.append(len(text))
        self._refusals.append(self.is_refusal(text))
        if vector is not None:
            self._vectors.append(vector)
        self._since_check += 1
        if len(self._lengths) < self.window_size or self._since_check < self.check_every:
            return []
        self._since_check = 0
        found = self.check()
        # Fire on the transition into drift only; a signal re-arms once it falls back below.
        events = [e for e in found if e.signal not in self._drifting]
        self._drifting = {e.signal for e in found}
        if self.bus is not None:
            for event in events:
                await self.bus.publish(event)
        return events

    def check(self) -> list[DriftEvent]:
        """Compare the current window with the baseline now; the signals past their thresholds."""
        events: list[DriftEvent] = []
        n_base, n_window = len(self._baseline_lengths), len(self._lengths)
        if not self._lengths or not self._baseline_lengths:
            return events
        length_psi = psi(self._baseline_lengths, list(self._lengths))
        base_median = float(np.median(self._baseline_lengths))
        window_median = float(np.median(list(self._lengths)))
        moved = abs(window_median - base_median) / max(base_median, 1.0)
        if length_psi > self.psi_threshold and moved >= self.min_length_change:
            events.append(
                DriftEvent(
                    monitor=self.name,
                    signal="length",
                    statistic="psi",
                    value=length_psi,
                    threshold=self.psi_threshold,
                    details={"baseline_median": base_median, "window_median": window_median},
                    baseline_size=n_base,
                    window_size=n_window,
                )
            )
        base_rate = float(np.mean(self._baseline_refusals))
        rate = float(np.mean(list(self._refusals)))
        if abs(rate - base_rate) >= self.refusal_delta:
            events.append(
                DriftEvent(
                    monitor=self.name,
                    signal="refusal_rate",
                    statistic="rate_delta",
                    value=rate - base_rate,
                    threshold=self.refusal_delta,
                    details={"baseline_rate": base_rate, "window_rate": rate},
                    baseline_size=n_base,
                    window_size=n_window,
                )
            )
        if len(self._baseline_vectors) >= 10 and len(self._vectors) >= 10:
            base = np.stack(self._baseline_vectors)
            cur = np.stack(list(self._vectors))
            shift = cosine_shift(base, cur)
            centroid = base.mean(axis=0)
            norm = np.linalg.norm(centroid) or 1.0
            base_sim = base @ centroid / (np.linalg.norm(base, axis=1) * norm + 1e-12)
            cur_sim = cur @ centroid / (np.linalg.norm(cur, axis=1) * norm + 1e-12)
            sim_psi = psi(base_sim, cur_sim)
            if shift > self.cosine_threshold or sim_psi > self.psi_threshold:
                events.append(
                    DriftEvent(
                        monitor=self.name,
                        signal="embedding",
                        statistic="cosine_shift",
                        value=shift,
                        threshold=self.cosine_threshold,
                        details={"similarity_psi": sim_psi, "psi_threshold": self.psi_threshold},
                        baseline_size=n_base,
                        window_size=n_window,
                    )
                )
        return events
