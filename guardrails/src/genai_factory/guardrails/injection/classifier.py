"""The trained layer: logistic regression on MiniLM embeddings, shipped as a few KB of JSON.

``guardrails/scripts/train_injection.py`` trains it reproducibly (fixed seed, group-aware
train/validation/test split) and writes ``data/injection_classifier.json`` with the weights, the
decision threshold chosen on the validation split, and the data card's numbers. Scoring is one
dot product, so the layer costs nothing beyond the shared embedding.

Example:
    >>> import numpy as np
    >>> clf = InjectionClassifier.from_weights([1.0, 0.0], intercept=0.0, threshold=0.5)
    >>> [round(p, 3) for p in clf.probabilities(np.array([[2.0, 0.0], [-2.0, 0.0]]))]
    [0.881, 0.119]
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["DEFAULT_ARTEFACT", "InjectionClassifier"]

DEFAULT_ARTEFACT = "data/injection_classifier.json"


class InjectionClassifier:
    """P(injection | embedding) from a logistic regression artefact.

    ``path`` names the JSON artefact (default: the packaged one). ``threshold`` overrides the
    artefact's decision threshold; :meth:`score` maps probabilities so that the threshold is 0.5.
    """

    def __init__(self, path: str | None = None, threshold: float | None = None) -> None:
        self.path = path
        data: dict[str, Any]
        if path is None:
            artefact = resources.files("genai_factory.guardrails").joinpath(DEFAULT_ARTEFACT)
            data = json.loads(artefact.read_text(encoding="utf-8"))
        else:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        self._coef = np.asarray(data["coef"], dtype=np.float32)
        self._intercept = float(data["intercept"])
        self.threshold = threshold
        self._threshold = float(threshold if threshold is not None else data.get("threshold", 0.5))
        if not 0.0 < self._threshold < 1.0:
            raise ValueError("threshold must be strictly between 0 and 1")
        self.metadata: dict[str, Any] = dict(data.get("metadata", {}))

    @classmethod
    def from_weights(
        cls, coef: Sequence[float], intercept: float, threshold: float = 0.5
    ) -> InjectionClassifier:
        """A classifier from raw weights (tests, experiments)."""
        obj = cls.__new__(cls)
        obj.path = None
        obj.threshold = threshold
        obj._coef = np.asarray(coef, dtype=np.float32)
        obj._intercept = float(intercept)
        obj._threshold = threshold
        obj.metadata = {}
        return obj

    @property
    def decision_threshold(self) -> float:
        return self._threshold

    def probabilities(self, vectors: npt.NDArray[np.float32]) -> list[float]:
        logits = np.asarray(vectors, dtype=np.float32) @ self._coef + self._intercept
        return [1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, float(z))))) for z in logits]

    def score(self, probability: float) -> float:
        """``probability`` re-centred so the decision threshold maps to 0.5."""
        p = min(max(probability, 1e-9), 1 - 1e-9)
        t = self._threshold
        z = math.log(p / (1 - p)) - math.log(t / (1 - t))
        return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))
