"""GenAI Factory LLM Gateway (catalog item 1): OpenAI/Anthropic-compatible hub; see the README."""

from typing import Any

__all__ = ["__version__"]


def __getattr__(name: str) -> Any:
    # looked up on demand: reading package metadata scans every installed distribution, which
    # the gateway's start-up does not need to pay for
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("genai-factory-llm-gateway")
        except PackageNotFoundError:  # running from a source tree without installing
            return "0.0.0"
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
