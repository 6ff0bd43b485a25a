"""The packaged MiniLM: unit vectors, meaning-aware similarities, the shared Embedder contract."""

from __future__ import annotations

import numpy as np

from genai_factory.cache.embedding import MODEL_ID, MiniLMEmbedder, TextEmbedder
from genai_factory.shared.contracts import Embedder


async def test_vectors_are_unit_norm_and_paraphrases_are_closest(embedder: MiniLMEmbedder) -> None:
    vectors = embedder.encode(
        ["How do I reset my password?", "How can I reset my password", "Best pizza in Rome"]
    )
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    sims = vectors @ vectors.T
    assert sims[0, 1] > 0.9 > 0.3 > sims[0, 2]
    assert embedder.encode([]).shape == (0, 384)


async def test_it_is_both_a_cache_embedder_and_the_shared_embedder(
    embedder: MiniLMEmbedder,
) -> None:
    assert isinstance(embedder, TextEmbedder) and isinstance(embedder, Embedder)
    assert embedder.model_id == MODEL_ID
    (vector,) = await embedder.embed(["hello"])
    assert len(vector) == embedder.dimensions == 384


def test_batches_give_the_same_vectors_as_single_calls(embedder: MiniLMEmbedder) -> None:
    texts = [f"question number {i} about invoices" for i in range(5)]
    small = MiniLMEmbedder(batch_size=2)
    assert np.allclose(small.encode(texts), embedder.encode(texts), atol=1e-5)
    assert small.model_id == MODEL_ID
