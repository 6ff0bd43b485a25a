"""``gf gateway``: serve the gateway, check a config file, hash an API key for one.

Example:
    >>> from click.testing import CliRunner
    >>> CliRunner().invoke(gateway, ["hash-key", "sk-test"]).output.strip()[:16]
    'f3abf2a6cc4f0098'
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from genai_factory.shared.errors import ConfigError

if TYPE_CHECKING:
    from genai_factory.gateway.config import GatewaySettings

__all__ = ["gateway"]


@click.group("gateway")
def gateway() -> None:
    """The LLM gateway: OpenAI/Anthropic-compatible API, routing, failover, rate limits."""


def _settings(
    config: str | None,
    upstream: str | None,
    model: str | None,
    api_key: str | None,
    upstream_api_key: str | None,
    host: str | None,
    port: int | None,
) -> GatewaySettings:
    from genai_factory.gateway.config import load_gateway_settings, zero_config

    overrides = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    if config:
        if upstream or model:
            raise click.UsageError("give either --config or --upstream/--model, not both")
        return load_gateway_settings(config, **overrides)
    if not (upstream and model):
        raise click.UsageError("give --config FILE, or --upstream URL and --model NAME")
    return zero_config(
        upstream,
        model,
        api_key=api_key,
        upstream_api_key=upstream_api_key,
        host=host or "127.0.0.1",
        port=4000 if port is None else port,
    )


@gateway.command("serve")
@click.option("--config", type=click.Path(dir_okay=False), help="gateway YAML settings file")
@click.option("--upstream", help="zero-config: an OpenAI-compatible base URL (…/v1)")
@click.option("--model", help="zero-config: the model name clients ask for")
@click.option("--api-key", envvar="GF_GATEWAY_API_KEY", help="zero-config: the key clients send")
@click.option(
    "--upstream-api-key", envvar="GF_UPSTREAM_API_KEY", help="zero-config: the upstream's key"
)
@click.option("--host", default=None, help="bind address [default: 127.0.0.1]")
@click.option("--port", type=int, default=None, help="port [default: 4000]")
def serve(
    config: str | None,
    upstream: str | None,
    model: str | None,
    api_key: str | None,
    upstream_api_key: str | None,
    host: str | None,
    port: int | None,
) -> None:
    """Run the gateway with the default pipeline (auth, limits, cache, usage, metrics)."""
    import uvicorn

    from genai_factory.gateway.app import create_app
    from genai_factory.gateway.runtime import Gateway
    from genai_factory.shared.logging import configure_logging
    from genai_factory.shared.settings import iter_secret_values

    settings = _settings(config, upstream, model, api_key, upstream_api_key, host, port)
    configure_logging(
        level=settings.log_level,
        fmt=settings.log_format,
        secrets=list(iter_secret_values(settings)),
    )
    app = create_app(Gateway(settings, config))
    click.echo(f"gateway listening on http://{settings.host}:{settings.port}", err=True)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        proxy_headers=False,  # no client address is used; skip X-Forwarded-* parsing
        server_header=False,
        timeout_graceful_shutdown=int(settings.drain_timeout_s),
    )


@gateway.command("check")
@click.option("--config", required=True, type=click.Path(dir_okay=False))
def check(config: str) -> None:
    """Validate a config file and build every component it names."""
    import asyncio

    from genai_factory.gateway.runtime import Gateway

    try:
        built = Gateway.from_file(config)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    for name, group in sorted(built.runtime.router.groups.items()):
        names = ", ".join(d.name for d in group.deployments)
        click.echo(f"{name}: {names}")
    for name in built.registry.names:
        click.echo(f"component {name}: {type(built.registry.get(name)).__name__}")
    for path, app in built.mounts:
        click.echo(f"mount {path}: {type(app).__name__}")
    asyncio.run(built.aclose())


@gateway.command("hash-key")
@click.argument("key")
def hash_key_command(key: str) -> None:
    """Print the SHA-256 digest to put in auth.keys[].key_sha256 instead of the key."""
    from genai_factory.gateway.auth import hash_key

    click.echo(hash_key(key))
