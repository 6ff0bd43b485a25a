"""One error hierarchy for the whole platform, mapped once to HTTP status and OpenAI error JSON.

Libraries raise these; HTTP services turn any of them into a response with :func:`to_http`.

Example:
    >>> from genai_factory.shared.errors import RateLimited, to_http
    >>> status, body, headers = to_http(RateLimited("slow down", retry_after=2.5))
    >>> error = body.get("error", {})
    >>> status, error.get("type"), headers.get("retry-after")
    (429, 'rate_limit_exceeded', '3')
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

__all__ = [
    "BadRequest",
    "Blocked",
    "BudgetExceeded",
    "ConfigError",
    "Conflict",
    "Forbidden",
    "GFError",
    "NotFound",
    "PayloadTooLarge",
    "ProviderError",
    "RateLimited",
    "ServiceUnavailable",
    "Unauthorized",
    "ValidationError",
    "error_body",
    "to_http",
]


class GFError(Exception):
    """Base of every error GenAI Factory raises on purpose.

    ``status`` and ``error_type`` decide the HTTP answer; ``param`` names the offending field
    (dotted path) when one is to blame; ``code`` is a short machine-readable reason.
    """

    status: ClassVar[int] = 500
    error_type: ClassVar[str] = "server_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code

    def headers(self) -> dict[str, str]:
        """Extra HTTP headers this error implies (e.g. ``retry-after``)."""
        return {}

    def __str__(self) -> str:
        if self.param and self.param not in self.message:
            return f"{self.message} (param: {self.param})"
        return self.message


class ConfigError(GFError):
    """Configuration (settings file, env var, component spec) is invalid. Names the field."""

    status = 500
    error_type = "configuration_error"


class BadRequest(GFError):
    """The client's request is malformed or not acceptable."""

    status = 400
    error_type = "invalid_request_error"


class ValidationError(BadRequest):
    """A request or value failed validation; ``param`` names the field."""


class PayloadTooLarge(BadRequest):
    """The request body exceeds the configured limit."""

    status = 413


class Unauthorized(GFError):
    """No valid credentials."""

    status = 401
    error_type = "authentication_error"


class Forbidden(GFError):
    """Valid credentials, but not allowed to do this."""

    status = 403
    error_type = "permission_error"


class NotFound(GFError):
    """Unknown model, deployment, key, prompt, document..."""

    status = 404
    error_type = "not_found_error"


class Conflict(GFError):
    """The request conflicts with the current state (e.g. a version that already exists)."""

    status = 409
    error_type = "conflict_error"


class _RetryAfterMixin(GFError):
    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, param=param, code=code)
        if retry_after is not None and (math.isnan(retry_after) or retry_after < 0):
            retry_after = None
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        # Retry-After is whole seconds; round up so clients never retry early.
        return {"retry-after": str(max(1, math.ceil(self.retry_after)))}


class RateLimited(_RetryAfterMixin):
    """A rate limit (requests or tokens per period) was hit."""

    status = 429
    error_type = "rate_limit_exceeded"


class BudgetExceeded(GFError):
    """A hard budget (tokens or money) would be exceeded."""

    status = 429
    error_type = "budget_exceeded"


class Blocked(GFError):
    """A guardrail or policy blocked the content. ``findings`` explain why."""

    status = 400
    error_type = "content_policy_violation"

    def __init__(
        self,
        message: str,
        *,
        findings: list[dict[str, Any]] | None = None,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, param=param, code=code)
        self.findings = findings or []


class ServiceUnavailable(_RetryAfterMixin):
    """Overloaded or not ready; try again later."""

    status = 503
    error_type = "service_unavailable"


class ProviderError(_RetryAfterMixin):
    """An upstream model provider failed. ``retryable`` tells the router whether to try again.

    ``upstream_status`` keeps the provider's own HTTP status; the gateway answers 502 unless the
    provider's status is a client error worth passing through (e.g. 400 context length).
    """

    status = 502
    error_type = "upstream_error"

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        upstream_status: int | None = None,
        provider: str | None = None,
        retry_after: float | None = None,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, retry_after=retry_after, param=param, code=code)
        self.retryable = retryable
        self.upstream_status = upstream_status
        self.provider = provider

    @property
    def http_status(self) -> int:
        if self.upstream_status in (400, 404, 413, 422):
            return self.upstream_status
        if self.upstream_status == 429:
            return 429
        if self.upstream_status in (408, 504):
            return 504
        return self.status


def _status_of(exc: GFError) -> int:
    if isinstance(exc, ProviderError):
        return exc.http_status
    return exc.status


def error_body(exc: BaseException) -> dict[str, Any]:
    """OpenAI-shaped error JSON for any exception; non-GF errors never leak their message."""
    if isinstance(exc, GFError):
        error: dict[str, Any] = {
            "message": exc.message,
            "type": exc.error_type,
            "param": exc.param,
            "code": exc.code,
        }
        if isinstance(exc, Blocked) and exc.findings:
            error["findings"] = exc.findings
        return {"error": error}
    return {
        "error": {
            "message": "internal server error",
            "type": "server_error",
            "param": None,
            "code": None,
        }
    }


def to_http(exc: BaseException) -> tuple[int, dict[str, Any], dict[str, str]]:
    """The one mapping from an exception to (HTTP status, OpenAI error JSON, headers)."""
    if isinstance(exc, GFError):
        return _status_of(exc), error_body(exc), exc.headers()
    return 500, error_body(exc), {}
