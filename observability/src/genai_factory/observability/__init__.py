"""GenAI Factory Observability (catalog item 7): GenAI traces, metrics, logs, cost, drift, console.

The pieces, each usable alone:

* :mod:`~genai_factory.observability.tracing`: ``GenAITelemetry`` spans and metrics following the
  OpenTelemetry GenAI semantic conventions (model calls, streams, embeddings, retrieval, tools,
  agents), plus ``InstrumentedChatModel`` / ``InstrumentedEmbedder`` wrappers.
* :mod:`~genai_factory.observability.setup`: ``setup_telemetry`` wires exporters (SQLite store,
  OTLP/HTTP, console), bounded batching and Prometheus ``/metrics`` from a ``TelemetryConfig``.
* :mod:`~genai_factory.observability.propagation`: W3C ``traceparent`` in and out of headers.
* :mod:`~genai_factory.observability.logs`: JSON logs stamped with trace and span ids, PII-masked.
* :mod:`~genai_factory.observability.pricing` and :mod:`~genai_factory.observability.cost`: the
  versioned price table, spend attribution and alert rules (webhook, log, store).
* :mod:`~genai_factory.observability.anomaly` and :mod:`~genai_factory.observability.drift`:
  EWMA + MAD anomalies and output drift, as typed events on an ``EventBus``.
* :mod:`~genai_factory.observability.console`: the built-in web console over the store.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("genai-factory-observability")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"

__all__ = ["__version__"]
