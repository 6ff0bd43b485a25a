"""GenAI Factory Model Serving (catalog item 5): local inference engines behind the ChatModel contract.

Built so far: the llama.cpp engine (:class:`~genai_factory.serving.engines.llamacpp.LlamaCppChatModel`)
over the packaged SmolLM2-135M-Instruct model, and the ``gf serving`` CLI. See the README for
what is not built yet.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("genai-factory-model-serving")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"

__all__ = ["__version__"]
