"""AWS Signature Version 4, from the published specification (no botocore on the hot path).

One signer for every module that calls AWS: the gateway's Bedrock provider and the security
module's KMS master keys.

Example (AWS's documented IAM ListUsers example):
    >>> from datetime import datetime, UTC
    >>> headers = sign_v4("GET", "https://iam.amazonaws.com/?Action=ListUsers&Version=2010-05-08",
    ...     {"content-type": "application/x-www-form-urlencoded; charset=utf-8"}, b"",
    ...     service="iam", region="us-east-1", access_key_id="AKIDEXAMPLE",
    ...     secret_access_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
    ...     now=datetime(2015, 8, 30, 12, 36, tzinfo=UTC))
    >>> headers["authorization"].rsplit("Signature=", 1)[1][:16]
    '5d672d79c15b1316'
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime
from urllib.parse import parse_qsl, quote, urlsplit

__all__ = ["canonical_request", "sign_v4", "signature"]


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).digest()


def _encode(value: str) -> str:
    return quote(value, safe="-_.~")


def canonical_request(
    method: str, url: str, headers: Mapping[str, str], payload_hash: str
) -> tuple[str, str]:
    """SigV4's canonical request for an already-built request, and its signed-header list."""
    parts = urlsplit(url)
    # non-S3 services encode each path segment once more on top of the URL's own encoding
    path = quote(parts.path or "/", safe="/-_.~")
    query = "&".join(
        sorted(
            f"{_encode(k)}={_encode(v)}" for k, v in parse_qsl(parts.query, keep_blank_values=True)
        )
    )
    lowered = {k.lower(): " ".join(str(v).split()) for k, v in headers.items()}
    signed = sorted(lowered)
    canonical_headers = "".join(f"{name}:{lowered[name]}\n" for name in signed)
    signed_list = ";".join(signed)
    text = "\n".join([method.upper(), path, query, canonical_headers, signed_list, payload_hash])
    return text, signed_list


def signature(
    method: str,
    url: str,
    headers: Mapping[str, str],
    payload_hash: str,
    *,
    amz_date: str,
    region: str,
    service: str,
    secret_access_key: str,
) -> tuple[str, str, str]:
    """(signature, signed header list, credential scope) for a request with these headers."""
    day = amz_date[:8]
    text, signed_list = canonical_request(method, url, headers, payload_hash)
    scope = f"{day}/{region}/{service}/aws4_request"
    string_to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(text.encode()).hexdigest()]
    )
    key = _hmac(("AWS4" + secret_access_key).encode(), day)
    for part in (region, service, "aws4_request"):
        key = _hmac(key, part)
    return hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest(), signed_list, scope


def sign_v4(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    service: str,
    region: str,
    access_key_id: str,
    secret_access_key: str,
    session_token: str | None = None,
    now: datetime | None = None,
    sign_payload_hash: bool = False,
) -> dict[str, str]:
    """``headers`` plus ``host``, ``x-amz-date``, the session token and ``authorization``.

    Every header passed in is signed. ``sign_payload_hash`` adds and signs
    ``x-amz-content-sha256`` (what the SDKs send to KMS). ``host`` leaves out a default port, as
    HTTP clients do in the Host header they send.
    """
    amz_date = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    if parts.port is not None and parts.port != {"https": 443, "http": 80}.get(parts.scheme):
        host = f"{host}:{parts.port}"
    payload_hash = hashlib.sha256(body).hexdigest()
    signed_headers = {k.lower(): v for k, v in headers.items()}
    signed_headers["host"] = host
    signed_headers["x-amz-date"] = amz_date
    if sign_payload_hash:
        signed_headers["x-amz-content-sha256"] = payload_hash
    if session_token:
        signed_headers["x-amz-security-token"] = session_token
    sig, signed_list, scope = signature(
        method,
        url,
        signed_headers,
        payload_hash,
        amz_date=amz_date,
        region=region,
        service=service,
        secret_access_key=secret_access_key,
    )
    signed_headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access_key_id}/{scope}, "
        f"SignedHeaders={signed_list}, Signature={sig}"
    )
    return signed_headers
