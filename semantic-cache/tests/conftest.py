from __future__ import annotations

import numpy as np
import pytest

from genai_factory.cache.embedding import MiniLMEmbedder


@pytest.fixture(scope="session")
def embedder() -> MiniLMEmbedder:
    """The real packaged MiniLM (int8 ONNX), one session for the whole test run."""
    return MiniLMEmbedder()


class LetterEmbedder:
    """Scripted unit-test embedder: letter counts (tests that need meaning use the real one)."""

    def __init__(self, model_id: str = "letters") -> None:
        self.model_id = model_id
        self.dimensions = 26

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), 26), dtype=np.float32)
        for row, text in enumerate(texts):
            for ch in text.lower():
                if "a" <= ch <= "z":
                    out[row, ord(ch) - 97] += 1
            out[row, 0] += 0.01  # never a zero vector
        return out / np.linalg.norm(out, axis=1, keepdims=True)


@pytest.fixture
def letters() -> LetterEmbedder:
    return LetterEmbedder()
