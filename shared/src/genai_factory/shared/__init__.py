"""GenAI Factory's shared foundation: every module imports this and nothing else of ours.

- :mod:`~genai_factory.shared.settings`: YAML + ``GF_*`` env settings
- :mod:`~genai_factory.shared.logging`: JSON logs with request/trace ids and secret redaction
- :mod:`~genai_factory.shared.errors`: the error hierarchy and its one HTTP mapping
- :mod:`~genai_factory.shared.models`: OpenAI-compatible chat/embeddings, documents, principals,
  verdicts, cost records
- :mod:`~genai_factory.shared.contracts`: the Protocols modules implement
- :mod:`~genai_factory.shared.factory`: ``{type, params}`` config -> component, and back
- :mod:`~genai_factory.shared.cli`: the ``gf`` command and its plugin group
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("genai-factory-shared")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"

__all__ = ["__version__"]
