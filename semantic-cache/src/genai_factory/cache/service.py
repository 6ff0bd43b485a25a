"""The cache as an HTTP service: lookup, store, invalidate, feedback, stats.

Callers authenticate with a bearer key. ``tenant_keys`` maps each key to the one tenant it may
read and write (a body naming another tenant is refused with 403); ``admin_key`` may act for any
tenant, purge across tenants and read stats. With no keys configured the service trusts the
``tenant`` in the body: run it so only the gateway can reach it. Bad input is a 4xx with an
OpenAI-shaped error body, never a 500.

Example::

    app = create_app(SemanticCache(), tenant_keys={"key-acme": "acme"}, admin_key="root")
    uvicorn.run(app, host="127.0.0.1", port=8090)
"""

from __future__ import annotations

import contextlib
import hmac
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from genai_factory.cache.core import SemanticCache
from genai_factory.cache.entry import CacheScope, InvalidationFilter
from genai_factory.shared.errors import (
    BadRequest,
    Forbidden,
    GFError,
    NotFound,
    Unauthorized,
    ValidationError,
    to_http,
)

__all__ = ["create_app"]

_Name = Annotated[str, Field(max_length=256)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ScopeFields(_Body):
    tenant: Annotated[str, Field(min_length=1, max_length=256)]
    namespace: _Name = "default"
    model: _Name = ""
    prompt_version: _Name = ""
    system: Annotated[str, Field(max_length=100_000)] = Field(
        default="", description="the system prompt (hashed into the scope)"
    )
    context: Annotated[str, Field(max_length=1_000_000)] = Field(
        default="", description="earlier turns or any other context (hashed into the scope)"
    )

    def scope(self) -> CacheScope:
        from genai_factory.cache.normalize import stable_hash

        return CacheScope(
            tenant=self.tenant,
            namespace=self.namespace,
            model=self.model,
            prompt_version=self.prompt_version,
            system_hash=stable_hash(self.system) if self.system else "",
            context_hash=stable_hash(self.context) if self.context else "",
        )


class LookupBody(ScopeFields):
    prompt: Annotated[str, Field(min_length=1, max_length=32_000)]


class StoreBody(LookupBody):
    response: Annotated[str, Field(max_length=1_000_000)]
    cost_usd: Annotated[float, Field(ge=0, le=1e6)] = 0.0
    latency_ms: Annotated[float, Field(ge=0, le=1e9)] = 0.0
    tags: Annotated[list[_Name], Field(max_length=32)] = []
    ttl_s: Annotated[float | None, Field(gt=0, le=10 * 365 * 86_400)] = None


class InvalidateBody(_Body):
    tenant: _Name | None = None
    namespace: _Name | None = None
    model: _Name | None = None
    prompt_version: _Name | None = None
    tag: _Name | None = None
    created_before: Annotated[float | None, Field(ge=0, le=1e11)] = None


class FeedbackBody(_Body):
    tenant: Annotated[str, Field(min_length=1, max_length=256)]
    key: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    correct: bool
    similarity: Annotated[float | None, Field(ge=-1.0, le=1.0)] = None
    sampled: bool = False


def create_app(
    cache: SemanticCache | None = None,
    tenant_keys: dict[str, str] | None = None,
    admin_key: str | None = None,
    start_cache: bool = False,
) -> FastAPI:
    """The FastAPI app over ``cache`` (a fresh default cache when None).

    ``start_cache`` subscribes to replica events and warms L1 up when the app starts, and
    closes the tiers when it stops.
    """
    engine = SemanticCache() if cache is None else cache
    keys = dict(tenant_keys or {})

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if start_cache:
            await engine.start()
        try:
            yield
        finally:
            if start_cache:
                await engine.close()

    app = FastAPI(title="GenAI Factory semantic cache", version="0.1.0", lifespan=lifespan)

    def caller(authorization: str | None) -> str | None:
        """The tenant the key allows ('*' for the admin key); None when auth is off."""
        if not keys and admin_key is None:
            return None
        if not authorization or not authorization.lower().startswith("bearer "):
            raise Unauthorized("missing bearer key")
        presented = authorization[7:].strip()
        if admin_key is not None and hmac.compare_digest(presented, admin_key):
            return "*"
        for key, tenant in keys.items():
            if hmac.compare_digest(presented, key):
                return tenant
        raise Unauthorized("unknown key")

    def check_tenant(allowed: str | None, tenant: str | None) -> None:
        if allowed in (None, "*"):
            return
        if tenant != allowed:
            raise Forbidden("this key may only use its own tenant", param="tenant")

    @app.exception_handler(GFError)
    async def _gf_error(request: Request, exc: GFError) -> JSONResponse:
        status, body, headers = to_http(exc)
        return JSONResponse(body, status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        param = ".".join(loc) or None
        message = (
            f"invalid '{param}': {first.get('msg', 'bad request')}"
            if param
            else "invalid request body"
        )
        status, body, _headers = to_http(ValidationError(message, param=param))
        return JSONResponse(body, status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        error: GFError = (
            NotFound("no such route") if exc.status_code == 404 else BadRequest(str(exc.detail))
        )
        status, body, _headers = to_http(error)
        return JSONResponse(body, status_code=exc.status_code if exc.status_code < 500 else status)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/cache/lookup")
    async def lookup(
        body: LookupBody, authorization: Annotated[str | None, Header()] = None
    ) -> dict[str, Any]:
        check_tenant(caller(authorization), body.tenant)
        result = await engine.lookup(body.scope(), body.prompt)
        entry = result.entry
        return {
            "hit": entry is not None,
            "kind": result.kind,
            "key": entry.key if entry else None,
            "similarity": result.similarity,
            "tier": result.tier,
            "response": entry.response if entry else None,
            "sampled": result.sampled,
            "rejected": [
                {"similarity": round(sim, 4), "reasons": list(reasons)}
                for _, sim, reasons in result.rejected
            ],
        }

    @app.post("/v1/cache/store")
    async def store(
        body: StoreBody, authorization: Annotated[str | None, Header()] = None
    ) -> dict[str, Any]:
        check_tenant(caller(authorization), body.tenant)
        entry = await engine.store(
            body.scope(),
            body.prompt,
            body.response,
            cost_usd=body.cost_usd,
            latency_ms=body.latency_ms,
            tags=body.tags,
            ttl_s=body.ttl_s,
        )
        return {"stored": entry is not None, "key": entry.key if entry else None}

    @app.post("/v1/cache/invalidate")
    async def invalidate(
        body: InvalidateBody, authorization: Annotated[str | None, Header()] = None
    ) -> dict[str, Any]:
        allowed = caller(authorization)
        fields = body.model_dump(exclude_none=True)
        if not fields:
            raise ValidationError("name at least one field to invalidate by (no blind flush)")
        if allowed not in (None, "*"):
            if body.tenant is None:
                raise Forbidden("a tenant key must name its tenant", param="tenant")
            check_tenant(allowed, body.tenant)
        removed = await engine.invalidate(InvalidationFilter(**fields))
        return {"invalidated": removed}

    @app.post("/v1/cache/feedback")
    async def feedback(
        body: FeedbackBody, authorization: Annotated[str | None, Header()] = None
    ) -> dict[str, Any]:
        check_tenant(caller(authorization), body.tenant)
        entry = engine.l1.peek(body.key)
        if entry is None or entry.scope.tenant != body.tenant:
            raise NotFound("no such cache entry for this tenant", param="key")
        await engine.feedback(
            body.key, correct=body.correct, similarity=body.similarity, sampled=body.sampled
        )
        return {"accepted": True, "threshold": engine.thresholds.for_entry(entry)}

    @app.get("/v1/cache/stats")
    async def stats(authorization: Annotated[str | None, Header()] = None) -> dict[str, Any]:
        if caller(authorization) not in (None, "*"):
            raise Forbidden("stats need the admin key")
        return engine.info()

    return app
