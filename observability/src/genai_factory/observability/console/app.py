"""The console: a static page plus JSON APIs over the telemetry store, as a mountable Starlette app.

``create_console_app(store)`` serves ``/`` (the page), ``/static/*`` (its CSS and JS, no CDN) and
``/api/*``; the gateway mounts it with ``Mount("/console", app=create_console_app(store))``.
``create_app(telemetry)`` is the standalone server: the console at ``/console`` and Prometheus
``/metrics`` beside it.

Every API answer is JSON; a bad parameter is a 400 and a missing trace a 404, both with an
OpenAI-shaped error body. With ``token`` set, the APIs need ``Authorization: Bearer <token>``
(the page reads the token from the URL fragment, ``/console/#token=...``, which never reaches a
server log). Responses carry a strict Content-Security-Policy: the page loads only its own files.

Example:
    >>> import asyncio, tempfile, pathlib, httpx
    >>> from genai_factory.observability.store import TelemetryStore
    >>> store = TelemetryStore(pathlib.Path(tempfile.mkdtemp()) / "t.db")
    >>> async def get(path):
    ...     transport = httpx.ASGITransport(app=create_console_app(store))
    ...     async with httpx.AsyncClient(transport=transport, base_url="http://c") as client:
    ...         return await client.get(path)
    >>> asyncio.run(get("/api/summary?window=3600")).json()["model_calls"]
    0
    >>> asyncio.run(get("/api/traces/nope")).status_code
    400
"""

from __future__ import annotations

import asyncio
import hmac
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from genai_factory.observability.store import TelemetryStore
from genai_factory.shared.errors import GFError, NotFound, Unauthorized, ValidationError, to_http

__all__ = ["create_app", "create_console_app"]

STATIC_DIR = Path(__file__).parent / "static"
_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValidationError(f"'{name}' must be an integer", param=name) from None
    if not low <= value <= high:
        raise ValidationError(f"'{name}' must be between {low} and {high}", param=name)
    return value


def _error_response(exc: GFError) -> JSONResponse:
    status, body, headers = to_http(exc)
    return JSONResponse(body, status_code=status, headers=headers)


class _SecurityHeaders(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await call_next(request)
        response.headers.setdefault("content-security-policy", _CSP)
        response.headers.setdefault("x-content-type-options", "nosniff")
        response.headers.setdefault("referrer-policy", "no-referrer")
        response.headers.setdefault("x-frame-options", "DENY")
        return response


class ConsoleAPI:
    """The JSON endpoints; each one runs its SQLite query in a worker thread."""

    def __init__(self, store: TelemetryStore, token: SecretStr | None = None) -> None:
        self.store = store
        self.token = token

    def _authorize(self, request: Request) -> None:
        if self.token is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, supplied = header.partition(" ")
        expected = self.token.get_secret_value()
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            supplied.encode(), expected.encode()
        ):
            raise Unauthorized("the console API needs 'Authorization: Bearer <console token>'")

    def endpoint(
        self, handler: Callable[[Request], Awaitable[Any]]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def wrapped(request: Request) -> Response:
            try:
                self._authorize(request)
                payload = await handler(request)
            except GFError as exc:
                return _error_response(exc)
            return JSONResponse(payload, headers={"cache-control": "no-store"})

        return wrapped

    @staticmethod
    def _since(request: Request) -> int:
        window = _int_param(request, "window", 3600, 60, 30 * 24 * 3600)
        return time.time_ns() - window * 10**9

    async def summary(self, request: Request) -> Any:
        since = self._since(request)
        # hourly steps let long windows read the hourly rollup
        step = 3600 if time.time_ns() - since >= 6 * 3600 * 10**9 else 60
        summary, cache, cost = await asyncio.gather(
            asyncio.to_thread(self.store.summary, since_ns=since),
            asyncio.to_thread(self.store.signals, kind="cache", since_ns=since),
            asyncio.to_thread(self.store.cost, since_ns=since, step_s=step, group_by="team"),
        )
        hits = sum(s["count"] for s in cache if s["outcome"] == "hit")
        lookups = sum(s["count"] for s in cache)
        summary["cache_hit_rate"] = hits / lookups if lookups else None
        summary["cost_usd"] = sum(t["cost_usd"] for t in cost["totals"].values())
        return summary

    async def requests(self, request: Request) -> Any:
        limit = _int_param(request, "limit", 50, 1, 500)
        before = request.query_params.get("before")
        before_ns = _int_param(request, "before", 0, 0, 2**62) if before else None
        return {
            "requests": await asyncio.to_thread(
                self.store.recent_requests, limit=limit, before_ns=before_ns
            )
        }

    async def trace(self, request: Request) -> Any:
        trace_id = str(request.path_params["trace_id"]).lower()
        if not _TRACE_ID.match(trace_id):
            raise ValidationError("trace id must be 32 hex characters", param="trace_id")
        spans = await asyncio.to_thread(self.store.trace, trace_id)
        if not spans:
            raise NotFound(f"no trace {trace_id} in the store", param="trace_id")
        return {"trace_id": trace_id, "spans": spans}

    async def latency(self, request: Request) -> Any:
        step = _int_param(request, "step", 60, 60, 86_400)
        return await asyncio.to_thread(
            self.store.latency, since_ns=self._since(request), step_s=step
        )

    async def cost(self, request: Request) -> Any:
        step = _int_param(request, "step", 60, 60, 86_400)
        group_by = request.query_params.get("group_by", "team")
        if group_by not in {"team", "model"}:
            raise ValidationError("'group_by' must be 'team' or 'model'", param="group_by")
        return await asyncio.to_thread(
            self.store.cost, since_ns=self._since(request), step_s=step, group_by=group_by
        )

    async def cache(self, request: Request) -> Any:
        rows = await asyncio.to_thread(
            self.store.signals, kind="cache", since_ns=self._since(request)
        )
        series: dict[int, dict[str, int]] = {}
        for row in rows:
            point = series.setdefault(row["t"], {"hit": 0, "miss": 0})
            point[row["outcome"]] = point.get(row["outcome"], 0) + row["count"]
        return {
            "series": [
                {"t": t, "hits": p["hit"], "misses": p["miss"],
                 "hit_rate": p["hit"] / (p["hit"] + p["miss"]) if p["hit"] + p["miss"] else None}
                for t, p in sorted(series.items())
            ]
        }  # fmt: skip

    async def guard(self, request: Request) -> Any:
        rows = await asyncio.to_thread(
            self.store.signals, kind="guard", since_ns=self._since(request)
        )
        totals: dict[str, dict[str, int]] = {}
        for row in rows:
            decisions = totals.setdefault(row["name"], {})
            decisions[row["outcome"]] = decisions.get(row["outcome"], 0) + row["count"]
        return {"guards": totals}

    async def alerts(self, request: Request) -> Any:
        limit = _int_param(request, "limit", 100, 1, 1000)
        return {"alerts": await asyncio.to_thread(self.store.alerts, limit=limit)}


def create_console_app(store: TelemetryStore, *, token: SecretStr | str | None = None) -> Starlette:
    """The console as an ASGI app with relative routes, ready to be mounted anywhere."""
    secret = SecretStr(token) if isinstance(token, str) else token
    api = ConsoleAPI(store, secret)

    async def index(request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", headers={"cache-control": "no-cache"})

    async def not_found(request: Request) -> Response:
        return _error_response(NotFound(f"no console route {request.url.path}"))

    routes = [
        Route("/", index),
        Route("/api/summary", api.endpoint(api.summary)),
        Route("/api/requests", api.endpoint(api.requests)),
        Route("/api/traces/{trace_id}", api.endpoint(api.trace)),
        Route("/api/latency", api.endpoint(api.latency)),
        Route("/api/cost", api.endpoint(api.cost)),
        Route("/api/cache", api.endpoint(api.cache)),
        Route("/api/guard", api.endpoint(api.guard)),
        Route("/api/alerts", api.endpoint(api.alerts)),
        Route("/api/{rest:path}", not_found),
        Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    return Starlette(routes=routes, middleware=[Middleware(_SecurityHeaders)])


def create_app(
    store: TelemetryStore,
    *,
    metrics_endpoint: Callable[[Request], Awaitable[Response]] | None = None,
    token: SecretStr | str | None = None,
) -> Starlette:
    """The standalone server: ``/console/`` and (when given) Prometheus ``/metrics``."""

    async def home(request: Request) -> Response:
        return RedirectResponse(url="/console/")

    routes: list[Route | Mount] = [
        Route("/", home),
        Mount("/console", app=create_console_app(store, token=token)),
    ]
    if metrics_endpoint is not None:
        routes.append(Route("/metrics", metrics_endpoint))
    return Starlette(routes=routes)
