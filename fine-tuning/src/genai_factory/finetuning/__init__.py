"""GenAI Factory Fine-Tuning (catalog item 8): not built yet; see this module's README."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("genai-factory-fine-tuning")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"

__all__ = ["__version__"]
