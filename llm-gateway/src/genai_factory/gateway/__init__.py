"""GenAI Factory LLM Gateway (catalog item 1): OpenAI/Anthropic-compatible hub; see the README."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("genai-factory-llm-gateway")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"

__all__ = ["__version__"]
