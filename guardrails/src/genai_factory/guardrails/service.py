"""The guard as an HTTP service: ``POST /v1/guard/input`` and ``POST /v1/guard/output``.

Both answer a :class:`~genai_factory.shared.models.Verdict` as JSON. Client mistakes (malformed
JSON, a body that is not a valid chat request, text that is not valid Unicode, a body over
``max_body_bytes``) are 4xx with an OpenAI-shaped error, never 500. With ``api_key`` set every
call needs ``Authorization: Bearer <key>``; the principal in the body is trusted, so the service
is meant for the gateway and other platform services, not for end users.

Example (rules-only guard, in-process)::

    app = create_app(CompositeGuard(input_guards=[PIIGuard(analyzer=PIIAnalyzer(use_ner=False))]))
    # uvicorn.run(app, host="127.0.0.1", port=8000)
"""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from genai_factory.shared.contracts import Guard
from genai_factory.shared.errors import (
    BadRequest,
    GFError,
    PayloadTooLarge,
    Unauthorized,
    ValidationError,
    to_http,
)
from genai_factory.shared.models import ChatCompletionRequest, Principal, Verdict

__all__ = ["InputCheck", "OutputCheck", "create_app"]


class InputCheck(BaseModel):
    """Body of ``POST /v1/guard/input``."""

    model_config = ConfigDict(extra="forbid")

    request: ChatCompletionRequest
    principal: Principal | None = None


class OutputCheck(BaseModel):
    """Body of ``POST /v1/guard/output``."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(max_length=1_000_000)
    request: ChatCompletionRequest
    principal: Principal | None = None


def _error(exc: BaseException) -> JSONResponse:
    status, body, headers = to_http(exc)
    return JSONResponse(body, status_code=status, headers=headers)


def _first_error(exc: RequestValidationError) -> ValidationError:
    errors = exc.errors()
    if not errors:
        return ValidationError("invalid request body")
    first = errors[0]
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    param = ".".join(loc) or None
    message = str(first.get("msg", "invalid value"))
    return ValidationError(f"invalid '{param or 'body'}': {message}", param=param)


def _check_unicode(*texts: str) -> None:
    for text in texts:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ValidationError("text is not valid Unicode (lone surrogate)") from None


def _texts(request: ChatCompletionRequest) -> list[str]:
    return [m.text() for m in request.messages] + [request.model]


def create_app(
    guard: Guard | None = None,
    api_key: str | None = None,
    max_body_bytes: int = 2_000_000,
) -> FastAPI:
    """The FastAPI app around ``guard`` (default: :meth:`CompositeGuard.default`, built lazily)."""
    app = FastAPI(
        title="GenAI Factory Guardrails",
        version="0.1.0",
        description="Screen chat requests and model answers: PII, prompt injection, policies.",
    )
    state: dict[str, Any] = {"guard": guard}

    def current_guard() -> Guard:
        if state["guard"] is None:
            from genai_factory.guardrails.composite import CompositeGuard

            state["guard"] = CompositeGuard.default()
        built: Guard = state["guard"]
        return built

    @app.middleware("http")
    async def limits_and_auth(request: Request, call_next: Any) -> Any:
        try:
            length = int(request.headers.get("content-length") or 0)
        except ValueError:
            return _error(BadRequest("invalid content-length header"))
        if length > max_body_bytes:
            return _error(PayloadTooLarge(f"request body over {max_body_bytes} bytes"))
        if api_key is not None and request.url.path.startswith("/v1/"):
            given = request.headers.get("authorization", "")
            expected = f"Bearer {api_key}"
            if not hmac.compare_digest(given.encode(), expected.encode()):
                return _error(Unauthorized("missing or wrong bearer token"))
        try:
            return await call_next(request)
        except Exception as exc:  # never leak internals as a stack trace
            return _error(exc)

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(_first_error(exc))

    @app.exception_handler(GFError)
    async def on_gf_error(request: Request, exc: GFError) -> JSONResponse:
        return _error(exc)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = BadRequest(str(exc.detail))
        status, body, _ = to_http(kind)
        body["error"]["type"] = (
            "not_found_error" if exc.status_code == 404 else body["error"]["type"]
        )
        return JSONResponse(body, status_code=exc.status_code if exc.status_code < 500 else status)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post(
        "/v1/guard/input",
        response_model=Verdict,
        responses={400: {"description": "invalid request"}, 401: {"description": "unauthorised"}},
    )
    async def guard_input(body: InputCheck) -> Verdict:
        """Screen a chat request before it reaches a model."""
        _check_unicode(*_texts(body.request))
        return await current_guard().check_input(body.request, body.principal)

    @app.post(
        "/v1/guard/output",
        response_model=Verdict,
        responses={400: {"description": "invalid request"}, 401: {"description": "unauthorised"}},
    )
    async def guard_output(body: OutputCheck) -> Verdict:
        """Screen a model's answer before the user sees it."""
        _check_unicode(body.text, *_texts(body.request))
        return await current_guard().check_output(body.text, body.request, body.principal)

    return app
