"""The per-scope ANN index: flat while small, HNSW past the threshold, tombstones compacted."""

from __future__ import annotations

import numpy as np
import pytest

from genai_factory.cache.index import ScopedIndex, ScopeIndex


def unit_vectors(n: int, d: int = 16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, d)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.mark.parametrize("large", ["ivf", "ivf_flat", "hnsw"])
def test_switches_to_an_approximate_index_and_still_finds_each_vector(large: str) -> None:
    vectors = unit_vectors(1200)
    index = ScopeIndex(16, ann_threshold=600, large_index=large, nprobe=8)
    index.add_many([f"k{i}" for i in range(500)], vectors[:500])
    assert index.kind == "flat"
    index.add_many([f"k{i}" for i in range(500, 1200)], vectors[500:])
    assert index.kind == large and len(index) == 1200
    found = sum(index.search(vectors[i], 1)[0][0] == f"k{i}" for i in range(1200))
    assert found >= 1150  # approximate, but close to exact on this size
    for i in range(400):  # compaction rebuilds the approximate index from its own vectors
        index.remove(f"k{i}")
    assert index.kind == large and len(index) == 800
    assert index.search(vectors[900], 1)[0][0] == "k900"


def test_ivf_retrains_when_the_scope_has_grown_fourfold() -> None:
    vectors = unit_vectors(2600)
    index = ScopeIndex(16, ann_threshold=600, nprobe=8)
    index.add_many([f"k{i}" for i in range(600)], vectors[:600])
    lists = index._index.nlist
    index.add_many([f"k{i}" for i in range(600, 2600)], vectors[600:])
    assert index.kind == "ivf" and index._index.nlist > lists
    assert index.search(vectors[2500], 1)[0][0] == "k2500"
    with pytest.raises(ValueError, match="large_index"):
        ScopeIndex(16, large_index="lsh")


def test_removal_is_a_tombstone_then_a_compaction() -> None:
    vectors = unit_vectors(200)
    index = ScopeIndex(16)
    index.add_many([f"k{i}" for i in range(200)], vectors)
    for i in range(0, 100):
        assert index.remove(f"k{i}")
    assert not index.remove("k0")
    assert len(index) == 100 and "k0" not in index and "k150" in index
    assert all(key != "k5" for key, _ in index.search(vectors[5], 5))
    assert index.search(vectors[150], 1)[0][0] == "k150"


def test_replacing_a_key_keeps_one_vector_and_bad_shapes_are_refused() -> None:
    index = ScopeIndex(16)
    vectors = unit_vectors(2)
    index.add("k", vectors[0])
    index.add("k", vectors[1])
    assert len(index) == 1 and index.search(vectors[1], 3) == [("k", pytest.approx(1.0, abs=1e-5))]
    with pytest.raises(ValueError, match="dimensions"):
        index.add("bad", np.ones(3, dtype=np.float32))
    assert index.search(vectors[0], 0) == []
    index.add_many([], np.zeros((0, 16), dtype=np.float32))


def test_scoped_index_keeps_scopes_apart_and_drops_empty_ones() -> None:
    index = ScopedIndex(dimensions=16)
    vectors = unit_vectors(3)
    index.add("a", "k1", vectors[0])
    index.add("b", "k2", vectors[1])
    assert [k for k, _ in index.search("a", vectors[1], k=5)] == ["k1"]
    assert index.scope_size("a") == 1 and index.scope_size("zzz") == 0
    assert index.remove("a", "k1") and not index.remove("a", "k1")
    assert not index.remove("nope", "k1")
    assert len(index) == 1
    index.clear()
    assert len(index) == 0


def test_rebuilds_read_exact_vectors_from_the_source_when_given() -> None:
    vectors = unit_vectors(900)
    table = {f"k{i}": vectors[i] for i in range(900)}
    asked: list[str] = []

    def source(key: str) -> np.ndarray | None:
        asked.append(key)
        return table.get(key)

    index = ScopeIndex(16, ann_threshold=600, nprobe=8, vector_source=source)
    index.add_many(list(table), vectors)
    assert index.kind == "ivf" and not index.exact_scores and len(asked) == 900
    assert index.search(vectors[700], 1)[0][0] == "k700"
    scoped = ScopedIndex(dimensions=16, vector_source=source)
    scoped.add("s", "k1", vectors[1])
    assert scoped._scopes["s"].vector_source is source and scoped._scopes["s"].exact_scores
