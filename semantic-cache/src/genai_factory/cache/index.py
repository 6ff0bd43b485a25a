"""Nearest-neighbour search over cached prompts, one faiss index per scope.

Each scope (tenant + model + ...) gets its own index, so a search can only return entries of
the caller's scope: tenant isolation is structural, not a filter applied afterwards. A scope
starts with an exact inner-product index (``IndexFlatIP``) and, once it holds ``ann_threshold``
vectors (10k by default; a flat scan grows linearly with the scope), switches to an approximate
one. The default, ``large_index="ivf"``, is IVF with 8-bit scalar-quantised codes (k-means lists,
about ``2 * sqrt(n)`` of them, ``nprobe`` searched; retrained whenever the scope has grown
fourfold): a quarter of the bytes of float32 to scan per probe, so a search costs about half of
IVF-Flat's, and the scores it returns are approximate (the cache rescores its few candidates with
their exact float32 vectors before any threshold). ``"ivf_flat"`` keeps float32 codes; ``"hnsw"``
is a graph (slower to build, no training, weaker on unclustered vectors). Removal is a tombstone;
the index is compacted when a quarter of it is dead.

Examples:
    >>> import numpy as np
    >>> from genai_factory.cache.index import ScopedIndex
    >>> index = ScopedIndex(dimensions=2)
    >>> index.add("tenant-a", "k1", np.array([1.0, 0.0], dtype=np.float32))
    >>> index.add("tenant-a", "k2", np.array([0.0, 1.0], dtype=np.float32))
    >>> [key for key, _ in index.search("tenant-a", np.array([0.9, 0.1], dtype=np.float32), k=1)]
    ['k1']
    >>> index.search("tenant-b", np.array([0.9, 0.1], dtype=np.float32), k=1)
    []
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import faiss
import numpy as np

from genai_factory.cache.embedding import Vector

__all__ = ["LARGE_INDEXES", "ScopeIndex", "ScopedIndex"]

LARGE_INDEXES = ("ivf", "ivf_flat", "hnsw")


class ScopeIndex:
    """The vectors of one scope: flat while small, IVF (or HNSW) once large."""

    def __init__(
        self,
        dimensions: int,
        ann_threshold: int = 10_000,
        hnsw_m: int = 16,
        ef_search: int = 64,
        ef_construction: int = 40,
        large_index: str = "ivf",
        nprobe: int = 16,
        vector_source: Callable[[str], Vector | None] | None = None,
    ) -> None:
        if large_index not in LARGE_INDEXES:
            raise ValueError(f"large_index must be one of {LARGE_INDEXES}, got {large_index!r}")
        self.dimensions = dimensions
        self.ann_threshold = ann_threshold
        self.hnsw_m = hnsw_m
        self.ef_search = ef_search
        self.ef_construction = ef_construction
        self.large_index = large_index
        self.nprobe = nprobe
        # the exact vectors of a key (the cache's entries hold them): rebuilds read them from
        # here so that re-quantising decoded 8-bit codes never compounds their error
        self.vector_source = vector_source
        self._index: Any = faiss.IndexFlatIP(dimensions)
        self._trained_size = 0
        self._keys: list[str | None] = []
        self._position: dict[str, int] = {}
        self._dead = 0

    @property
    def kind(self) -> str:
        """``flat`` while small, then the configured ``large_index``."""
        return "flat" if isinstance(self._index, faiss.IndexFlat) else self.large_index

    @property
    def exact_scores(self) -> bool:
        """False when search scores are approximate (quantised codes) and need rescoring."""
        return self.kind != "ivf"

    def __len__(self) -> int:
        return len(self._position)

    def __contains__(self, key: object) -> bool:
        return key in self._position

    def add(self, key: str, vector: Vector) -> None:
        self.add_many([key], vector.reshape(1, -1))

    def add_many(self, keys: list[str], vectors: np.ndarray[Any, Any]) -> None:
        """Add (or replace) several vectors at once; far faster than one by one for HNSW."""
        if not keys:
            return
        for key in keys:
            if key in self._position:
                self.remove(key)
        matrix = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(keys), -1)
        if matrix.shape[1] != self.dimensions:
            raise ValueError(
                f"vector has {matrix.shape[1]} dimensions, index has {self.dimensions}"
            )
        start = len(self._keys)
        self._index.add(matrix)
        for offset, key in enumerate(keys):
            self._keys.append(key)
            self._position[key] = start + offset
        size = len(self._position)
        if (self.kind == "flat" and size >= self.ann_threshold) or (
            self.kind in ("ivf", "ivf_flat") and size >= 4 * self._trained_size
        ):
            self._rebuild(large=True)

    def remove(self, key: str) -> bool:
        position = self._position.pop(key, None)
        if position is None:
            return False
        self._keys[position] = None
        self._dead += 1
        if self._dead > max(64, len(self._keys) // 4):
            self._rebuild(large=len(self._position) >= self.ann_threshold)
        return True

    def search(self, vector: Vector, k: int) -> list[tuple[str, float]]:
        """Up to ``k`` live (key, cosine) pairs, best first."""
        total = len(self._keys)
        if not self._position or k <= 0:
            return []
        wanted = min(total, k + min(self._dead, 64))
        query = np.ascontiguousarray(vector, dtype=np.float32).reshape(1, -1)
        scores, ids = self._index.search(query, wanted)
        found: list[tuple[str, float]] = []
        for score, idx in zip(scores[0], ids[0], strict=True):
            if idx < 0:
                continue
            key = self._keys[idx]
            if key is not None:
                found.append((key, float(score)))
                if len(found) == k:
                    break
        return found

    def _rebuild(self, *, large: bool) -> None:
        live = [(pos, key) for pos, key in enumerate(self._keys) if key is not None]
        vectors = self._live_vectors(live)
        index: Any
        if large and self.large_index == "hnsw":
            index = faiss.IndexHNSWFlat(self.dimensions, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = self.ef_construction
            index.hnsw.efSearch = self.ef_search
        elif large:
            lists = int(np.clip(2 * np.sqrt(len(live)), 16, 4096))
            quantizer = faiss.IndexFlatIP(self.dimensions)
            if self.large_index == "ivf":
                index = faiss.IndexIVFScalarQuantizer(
                    quantizer,
                    self.dimensions,
                    lists,
                    faiss.ScalarQuantizer.QT_8bit,
                    faiss.METRIC_INNER_PRODUCT,
                )
            else:
                index = faiss.IndexIVFFlat(
                    quantizer, self.dimensions, lists, faiss.METRIC_INNER_PRODUCT
                )
            sample = vectors
            if len(vectors) > 40 * lists:  # k-means needs ~40 points a list, not all of them
                pick = np.random.default_rng(0).choice(len(vectors), 40 * lists, replace=False)
                sample = vectors[np.sort(pick)]
            index.train(sample)
            index.nprobe = self.nprobe
            index.make_direct_map()  # so a later rebuild can read the vectors back
            self._trained_size = len(live)
        else:
            index = faiss.IndexFlatIP(self.dimensions)
        if len(live):
            index.add(vectors)
        self._index = index
        self._keys = [key for _, key in live]
        self._position = {key: pos for pos, key in enumerate(self._keys) if key is not None}
        self._dead = 0

    def _live_vectors(self, live: list[tuple[int, str]]) -> np.ndarray[Any, Any]:
        exact = [self.vector_source(key) for _, key in live] if self.vector_source else []
        if live and exact and all(v is not None for v in exact):
            return np.ascontiguousarray(np.vstack(exact), dtype=np.float32)  # type: ignore[arg-type]
        total = len(self._keys)
        every = (
            self._index.reconstruct_n(0, total)
            if total
            else np.zeros((0, self.dimensions), dtype=np.float32)
        )
        return np.ascontiguousarray(every[[pos for pos, _ in live]], dtype=np.float32)


class ScopedIndex:
    """One :class:`ScopeIndex` per scope key, created on first add, dropped when empty."""

    def __init__(
        self,
        dimensions: int = 384,
        ann_threshold: int = 10_000,
        hnsw_m: int = 16,
        ef_search: int = 64,
        large_index: str = "ivf",
        nprobe: int = 16,
        vector_source: Callable[[str], Vector | None] | None = None,
    ) -> None:
        self.dimensions = dimensions
        self.vector_source = vector_source
        self.ann_threshold = ann_threshold
        self.hnsw_m = hnsw_m
        self.ef_search = ef_search
        self.large_index = large_index
        self.nprobe = nprobe
        self._scopes: dict[str, ScopeIndex] = {}

    def _scope(self, scope_key: str) -> ScopeIndex:
        index = self._scopes.get(scope_key)
        if index is None:
            index = ScopeIndex(
                self.dimensions,
                self.ann_threshold,
                self.hnsw_m,
                ef_search=self.ef_search,
                large_index=self.large_index,
                nprobe=self.nprobe,
                vector_source=self.vector_source,
            )
            self._scopes[scope_key] = index
        return index

    def add(self, scope_key: str, key: str, vector: Vector) -> None:
        self._scope(scope_key).add(key, vector)

    def add_many(self, scope_key: str, keys: list[str], vectors: np.ndarray[Any, Any]) -> None:
        self._scope(scope_key).add_many(keys, vectors)

    def remove(self, scope_key: str, key: str) -> bool:
        index = self._scopes.get(scope_key)
        if index is None:
            return False
        removed = index.remove(key)
        if not len(index):
            del self._scopes[scope_key]
        return removed

    def search(self, scope_key: str, vector: Vector, k: int = 4) -> list[tuple[str, float]]:
        index = self._scopes.get(scope_key)
        return [] if index is None else index.search(vector, k)

    def scope_size(self, scope_key: str) -> int:
        index = self._scopes.get(scope_key)
        return 0 if index is None else len(index)

    def __len__(self) -> int:
        return sum(len(index) for index in self._scopes.values())

    def clear(self) -> None:
        self._scopes.clear()
