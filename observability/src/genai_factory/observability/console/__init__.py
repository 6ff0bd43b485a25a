"""The built-in web console (``/console``): live requests, traces, cost, latency, cache, guards."""

from genai_factory.observability.console.app import create_app, create_console_app

__all__ = ["create_app", "create_console_app"]
