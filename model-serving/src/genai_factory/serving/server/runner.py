"""Runs the server: uvicorn for REST, optionally gRPC beside it, one process, graceful stop.

On SIGTERM or Ctrl-C the manager starts draining at once (new requests get 503 with
Retry-After, so a load balancer moves on), uvicorn stops accepting connections and waits up to
``drain_timeout_s`` for running requests, then the engines are freed and the process exits 0.

Example::

    import asyncio
    from genai_factory.serving.server.config import ServerConfig
    from genai_factory.serving.server.runner import serve

    asyncio.run(serve(ServerConfig(), host="127.0.0.1", port=8000))
"""

from __future__ import annotations

import logging
import signal
from types import FrameType
from typing import Any

import uvicorn

from genai_factory.serving.server.app import ServerParts, create_app
from genai_factory.serving.server.config import ServerConfig
from genai_factory.serving.server.manager import ModelManager
from genai_factory.shared.errors import ServiceUnavailable

__all__ = ["DrainingServer", "serve"]

logger = logging.getLogger("genai_factory.serving.server")


class DrainingServer(uvicorn.Server):
    """A uvicorn server that starts draining the model manager on the first stop signal and
    exits normally afterwards (uvicorn alone re-raises the signal once it has stopped)."""

    def __init__(self, config: uvicorn.Config, manager: ModelManager) -> None:
        super().__init__(config)
        self.manager = manager

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.manager.begin_drain()
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True  # a second Ctrl-C: stop waiting
        else:
            self.should_exit = True


async def serve(
    config: ServerConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "info",
) -> None:
    """Serve ``config`` until a stop signal; raises ServiceUnavailable if start-up fails."""
    parts = ServerParts(config)
    parts.manager.check()  # a wrong engine type fails here, before anything binds
    app = create_app(parts=parts)
    uvicorn_config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=int(config.drain_timeout_s) or None,
    )
    server = DrainingServer(uvicorn_config, parts.manager)
    grpc_server: Any = None
    if config.grpc_port is not None:
        from genai_factory.serving.rpc.server import start_grpc_server

        grpc_server = await start_grpc_server(parts, host, config.grpc_port)
        logger.info("gRPC on %s:%s", host, grpc_server.port)
    try:
        await server.serve()
    except SystemExit:  # uvicorn's way of saying the lifespan start-up failed
        server.started = False
    finally:
        if grpc_server is not None:
            await grpc_server.stop(grace=config.drain_timeout_s)
    if not server.started:
        raise ServiceUnavailable("the server did not start (see the log above)")
