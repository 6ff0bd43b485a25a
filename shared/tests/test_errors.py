from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from genai_factory.shared import errors as e


@pytest.mark.parametrize(
    ("exc", "status", "error_type"),
    [
        (e.ConfigError("x"), 500, "configuration_error"),
        (e.ValidationError("x", param="messages"), 400, "invalid_request_error"),
        (e.PayloadTooLarge("x"), 413, "invalid_request_error"),
        (e.Unauthorized("x"), 401, "authentication_error"),
        (e.Forbidden("x"), 403, "permission_error"),
        (e.NotFound("x"), 404, "not_found_error"),
        (e.Conflict("x"), 409, "conflict_error"),
        (e.RateLimited("x"), 429, "rate_limit_exceeded"),
        (e.BudgetExceeded("x"), 429, "budget_exceeded"),
        (e.Blocked("x"), 400, "content_policy_violation"),
        (e.ServiceUnavailable("x"), 503, "service_unavailable"),
        (e.ProviderError("x", retryable=True), 502, "upstream_error"),
    ],
)
def test_each_error_maps_to_one_status_and_openai_body(
    exc: e.GFError, status: int, error_type: str
) -> None:
    got_status, body, _ = e.to_http(exc)
    assert got_status == status
    assert set(body["error"]) >= {"message", "type", "param", "code"}
    assert body["error"]["type"] == error_type
    assert body["error"]["message"] == "x"


def test_the_offending_field_is_named() -> None:
    _, body, _ = e.to_http(e.ValidationError("bad", param="messages.0.role", code="invalid"))
    assert body["error"]["param"] == "messages.0.role"
    assert body["error"]["code"] == "invalid"
    assert "messages.0.role" in str(e.ValidationError("bad", param="messages.0.role"))


def test_unexpected_exceptions_never_leak_their_message() -> None:
    status, body, headers = e.to_http(RuntimeError("db password is hunter2"))
    assert status == 500
    assert "hunter2" not in str(body)
    assert headers == {}


@pytest.mark.parametrize(
    ("upstream", "status"),
    [(400, 400), (404, 404), (429, 429), (504, 504), (408, 504), (500, 502), (None, 502)],
)
def test_provider_errors_keep_meaningful_upstream_statuses(
    upstream: int | None, status: int
) -> None:
    exc = e.ProviderError("boom", retryable=False, upstream_status=upstream, provider="openai")
    assert e.to_http(exc)[0] == status
    assert exc.provider == "openai"


def test_blocked_carries_its_findings() -> None:
    findings = [{"rule_id": "pii.email", "span": [0, 5]}]
    _, body, _ = e.to_http(e.Blocked("no", findings=findings))
    assert body["error"]["findings"] == findings


@given(st.floats(min_value=-1e6, max_value=1e6) | st.just(math.nan))
def test_retry_after_is_whole_seconds_rounded_up_never_early(seconds: float) -> None:
    headers = e.RateLimited("slow", retry_after=seconds).headers()
    if math.isnan(seconds) or seconds < 0:
        assert headers == {}
    else:
        value = int(headers["retry-after"])
        assert value >= 1
        assert value >= seconds
        assert value - seconds < 1 or value == 1
