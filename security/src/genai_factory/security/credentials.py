"""Pull one bearer credential out of request headers, refusing anything ambiguous or malformed.

Header injection defences live here, once, for every authenticator: duplicate ``Authorization``
headers (as separate entries, as case variants in a plain dict, or folded with a comma), CR/LF or
other control characters, non-ASCII bytes, oversized values, and requests that carry both an
``Authorization`` and an ``x-api-key`` header are all refused with
:class:`~genai_factory.shared.errors.Unauthorized`. The error never repeats the credential.

Example:
    >>> from genai_factory.security.credentials import bearer_credential
    >>> bearer_credential({"Authorization": "Bearer abc.def.ghi"})
    'abc.def.ghi'
    >>> bearer_credential({"x-api-key": "gf-0123_secret"})
    'gf-0123_secret'
    >>> bearer_credential({"Authorization": "Bearer a\\r\\nX-Admin: 1"})
    Traceback (most recent call last):
    ...
    genai_factory.shared.errors.Unauthorized: malformed Authorization header
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from genai_factory.shared.errors import Unauthorized

__all__ = ["MAX_CREDENTIAL_HEADER_BYTES", "bearer_credential"]

# Far above any real token (a large JWT is ~2 KiB) and far below what could hurt us.
MAX_CREDENTIAL_HEADER_BYTES = 8192

# RFC 6750 b64token (token68): the only characters a bearer credential may contain.
_TOKEN68 = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
# Visible ASCII and the space: anything else (CR, LF, NUL, tabs, non-ASCII) is refused.
_PRINTABLE = re.compile(r"[\x20-\x7e]*")

_AUTHORIZATION = "authorization"
_API_KEY = "x-api-key"


def _values(headers: Mapping[str, str], name: str) -> list[str]:
    """Every value sent for ``name``, however the mapping stores repeats or case variants."""
    for getter in ("getlist", "get_list"):  # starlette.Headers / httpx.Headers keep repeats
        method: Any = getattr(headers, getter, None)
        if callable(method):
            return [str(v) for v in method(name)]
    return [str(value) for key, value in headers.items() if key.lower() == name]


def _single(headers: Mapping[str, str], name: str) -> str | None:
    values = _values(headers, name)
    if not values:
        return None
    if len(values) > 1:
        raise Unauthorized(f"duplicate {_display(name)} header", code="duplicate_credentials")
    value = values[0]
    if len(value) > MAX_CREDENTIAL_HEADER_BYTES:
        raise Unauthorized(f"oversized {_display(name)} header", code="malformed_credentials")
    if not _PRINTABLE.fullmatch(value):
        raise Unauthorized(f"malformed {_display(name)} header", code="malformed_credentials")
    return value


def _display(name: str) -> str:
    return "Authorization" if name == _AUTHORIZATION else name


def bearer_credential(headers: Mapping[str, str]) -> str:
    """The one credential in ``headers`` (``Authorization: Bearer ...`` or ``x-api-key``).

    Raises Unauthorized when there is none, more than one, or it is malformed.
    """
    authorization = _single(headers, _AUTHORIZATION)
    api_key = _single(headers, _API_KEY)
    if authorization is not None and api_key is not None:
        raise Unauthorized(
            "send one credential: Authorization or x-api-key, not both",
            code="duplicate_credentials",
        )
    if authorization is None and api_key is None:
        raise Unauthorized("missing credentials", code="missing_credentials")
    if authorization is not None:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized(
                "the Authorization header must be 'Bearer <token>'", code="malformed_credentials"
            )
        if not _TOKEN68.fullmatch(token):  # also refuses commas: folded duplicate headers
            raise Unauthorized("malformed Authorization header", code="malformed_credentials")
        return token
    assert api_key is not None
    api_key = api_key.strip()
    if not _TOKEN68.fullmatch(api_key):
        raise Unauthorized("malformed x-api-key header", code="malformed_credentials")
    return api_key
