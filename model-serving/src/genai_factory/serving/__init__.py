"""GenAI Factory Model Serving (catalog item 5): local inference engines behind the ChatModel contract.

The llama.cpp engine (:class:`~genai_factory.serving.engines.llamacpp.LlamaCppChatModel`) over
the packaged SmolLM2-135M-Instruct model, sentence embeddings
(:mod:`genai_factory.serving.embeddings`), and the model server (:mod:`genai_factory.serving.server`:
OpenAI-compatible REST, gRPC in :mod:`genai_factory.serving.rpc`, admission control, several models
under a memory budget, Prometheus metrics) behind ``gf serving serve``. The README's status table
says what works and what is planned.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("genai-factory-model-serving")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"

__all__ = ["__version__"]
