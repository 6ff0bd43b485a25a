"""``gf cache``: evaluate on labelled pairs, prewarm from a log, serve over HTTP.

``gf cache eval --pairs FILE.jsonl`` prints JSON: precision, recall, F1 and hit rate at the
default settings, the same without the verifier, and the precision/recall curve over
thresholds. A malformed line stops it with ``error: FILE:LINE: reason`` and exit code 2.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import click

from genai_factory.shared.errors import GFError

__all__ = ["cache"]


class _InputError(click.ClickException):
    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def _load_cache_config(path: str | None) -> Any:
    from genai_factory.cache.core import SemanticCache
    from genai_factory.shared.factory import build_component
    from genai_factory.shared.settings import read_yaml

    if path is None:
        return SemanticCache()
    data = read_yaml(Path(path))
    spec = data.get("cache", {"type": "genai_factory.cache.core:SemanticCache", "params": {}})
    return build_component(spec, SemanticCache, where="cache")


@click.group("cache")
def cache() -> None:
    """Semantic cache: evaluate, prewarm, serve."""


@cache.command("eval")
@click.option("--pairs", "pairs_path", required=True, type=click.Path(dir_okay=False))
@click.option(
    "--threshold", type=click.FloatRange(0.0, 1.0), default=None, help="default: calibrated"
)
@click.option("--no-verify", is_flag=True, help="report the default settings without the verifier")
def eval_command(pairs_path: str, threshold: float | None, no_verify: bool) -> None:
    """Precision, recall, F1 and hit rate of the cache on labelled pairs (JSONL)."""
    from genai_factory.cache.embedding import MiniLMEmbedder
    from genai_factory.cache.pairs import evaluate_pairs, parse_pairs
    from genai_factory.cache.verify import PairVerifier

    path = Path(pairs_path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise _InputError(f"cannot read {path}: {exc}") from None
    try:
        pairs = parse_pairs(lines, source=str(path))
    except GFError as exc:
        raise _InputError(exc.message) from None
    verifier = PairVerifier(checks=[]) if no_verify else PairVerifier.learned()
    report = evaluate_pairs(pairs, MiniLMEmbedder(), verifier, threshold=threshold)
    click.echo(json.dumps(report, indent=2))


@cache.command("prewarm")
@click.option("--log", "log_path", required=True, type=click.Path(dir_okay=False))
@click.option("--config", "config_path", default=None, type=click.Path(dir_okay=False))
def prewarm_command(log_path: str, config_path: str | None) -> None:
    """Load a JSONL log of answers into the configured tiers (L2/L3 keep them)."""
    from genai_factory.cache.prewarm import prewarm

    engine = _load_cache_config(config_path)

    async def run() -> int:
        try:
            return await prewarm(engine, Path(log_path))
        finally:
            await engine.close()

    try:
        loaded = asyncio.run(run())
    except GFError as exc:
        raise _InputError(exc.message) from None
    click.echo(json.dumps({"loaded": loaded}))


@cache.command("serve")
@click.option("--config", "config_path", default=None, type=click.Path(dir_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8090, show_default=True, type=click.IntRange(1, 65535))
def serve_command(config_path: str | None, host: str, port: int) -> None:  # pragma: no cover
    """Serve the HTTP API. Keys: $GF_CACHE_ADMIN_KEY, $GF_CACHE_TENANT_KEYS ("key=tenant,...")."""
    import uvicorn

    from genai_factory.cache.service import create_app

    tenant_keys = dict(
        item.split("=", 1)
        for item in os.environ.get("GF_CACHE_TENANT_KEYS", "").split(",")
        if "=" in item
    )
    engine = _load_cache_config(config_path)
    app = create_app(
        engine, tenant_keys=tenant_keys, admin_key=os.environ.get("GF_CACHE_ADMIN_KEY")
    )

    @app.on_event("startup")
    async def _start() -> None:
        await engine.start()

    uvicorn.run(app, host=host, port=port)
