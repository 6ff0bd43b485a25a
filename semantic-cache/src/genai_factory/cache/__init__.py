"""GenAI Factory Semantic Cache (catalog item 10): exact + verified semantic lookup over tiered storage.

Start at :class:`genai_factory.cache.core.SemanticCache` (the engine) and
:class:`genai_factory.cache.response_cache.SemanticResponseCache` (the shared ResponseCache contract).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("genai-factory-semantic-cache")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"

__all__ = ["__version__"]
