"""``gf observability``: serve the console over a telemetry store, show the price table."""

from __future__ import annotations

import os
from pathlib import Path

import click

__all__ = ["observability"]


@click.group("observability")
def observability() -> None:
    """Traces, metrics, cost and the built-in console."""


@observability.command("serve")
@click.option(
    "--db",
    "db_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path(".gf-data/telemetry.db"),
    show_default=True,
    help="the SQLite telemetry store to read (the one the platform writes)",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8765, show_default=True)
def serve_command(db_path: Path, host: str, port: int) -> None:
    """Serve /console/ and /metrics. GF_CONSOLE_TOKEN, when set, protects the console APIs."""
    import uvicorn

    from genai_factory.observability.console import create_app
    from genai_factory.observability.setup import TelemetryConfig, setup_telemetry

    telemetry = setup_telemetry(TelemetryConfig(sqlite_path=db_path, service_name="gf-console"))
    assert telemetry.store is not None and telemetry.prometheus is not None
    app = create_app(
        telemetry.store,
        metrics_endpoint=telemetry.prometheus.endpoint,
        token=os.environ.get("GF_CONSOLE_TOKEN") or None,
    )
    click.echo(f"console on http://{host}:{port}/console/  (store: {db_path})")
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        telemetry.shutdown()


@observability.command("prices")
@click.option("--file", "path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def prices_command(path: Path | None) -> None:
    """Print the price table (USD per 1M tokens) with its version and date."""
    from genai_factory.observability.pricing import PriceTable

    table = PriceTable.load(path)
    click.echo(f"price table {table.version} ({table.date}), USD per 1M tokens")
    click.echo(f"{'model':<24} {'input':>9} {'output':>9} {'cached':>9}")
    for name, price in sorted(table.table.models.items()):
        click.echo(f"{name:<24} {price.input:>9} {price.output:>9} {price.cached:>9}")
