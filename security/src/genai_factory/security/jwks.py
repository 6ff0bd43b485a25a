"""JSON Web Key Sets: fetched over HTTP(S), cached, refreshed on an unknown key id (rate-limited).

An identity provider rotates its signing keys by publishing the new key in its JWKS before it
signs with it. :class:`JWKSCache` keeps the set for ``ttl_s`` seconds, and when a token names a key
id it has not seen, fetches the set again at once, but at most once per
``min_refetch_interval_s``, so a flood of tokens with invented key ids cannot turn us into a
traffic amplifier against the provider. Concurrent misses share one fetch.

Only public signature keys are kept: a key whose ``use`` is not ``sig``, that carries private
material, or that PyJWT cannot load is skipped (and logged by key id, never by content).

Example:
    >>> import asyncio
    >>> from genai_factory.security.jwks import StaticJWKS
    >>> jwks = StaticJWKS({"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "k1",
    ...                              "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]})
    >>> asyncio.run(jwks.key_for("k1"))["kty"]
    'OKP'
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

import httpx

from genai_factory.shared.errors import ConfigError, ServiceUnavailable, Unauthorized

__all__ = ["JWKSCache", "KeySource", "StaticJWKS", "parse_jwks"]

logger = logging.getLogger(__name__)

_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "k", "oth"})
_KEY_TYPES = frozenset({"RSA", "EC", "OKP"})
MAX_JWKS_BYTES = 256 * 1024
MAX_KEYS = 100


@runtime_checkable
class KeySource(Protocol):
    """Where verification keys come from: ``key_for(kid)`` -> the JWK (a dict) or Unauthorized."""

    async def key_for(self, kid: str | None) -> dict[str, Any]: ...


def parse_jwks(document: Any) -> dict[str | None, dict[str, Any]]:
    """The usable public signature keys of a JWKS document, by key id.

    A key without ``kid`` is stored under ``None`` (usable only when it is the only key).
    """
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise ValueError("a JWKS must be an object with a 'keys' list")
    keys: dict[str | None, dict[str, Any]] = {}
    for entry in document["keys"][:MAX_KEYS]:
        if not isinstance(entry, Mapping):
            continue
        kid = entry.get("kid")
        if kid is not None and not isinstance(kid, str):
            continue
        if entry.get("kty") not in _KEY_TYPES:
            logger.warning("jwks key skipped", extra={"kid": kid, "reason": "unsupported kty"})
            continue
        if entry.get("use", "sig") != "sig":
            continue
        if _PRIVATE_MEMBERS & set(entry):
            # a provider publishing private keys is misconfigured; never verify with them
            logger.warning("jwks key skipped", extra={"kid": kid, "reason": "private material"})
            continue
        keys[kid] = dict(entry)
    return keys


def _pick(keys: Mapping[str | None, dict[str, Any]], kid: str | None) -> dict[str, Any] | None:
    if kid is not None:
        return keys.get(kid)
    # no kid in the token: acceptable only when the set holds exactly one key
    if len(keys) == 1:
        return next(iter(keys.values()))
    return None


class StaticJWKS:
    """A fixed key set (from config or a file): no fetching, no rotation."""

    def __init__(self, jwks: dict[str, Any]) -> None:
        self.jwks = jwks
        try:
            self._keys = parse_jwks(jwks)
        except ValueError as exc:
            raise ConfigError(f"invalid JWKS: {exc}", param="jwks") from None

    async def key_for(self, kid: str | None) -> dict[str, Any]:
        key = _pick(self._keys, kid)
        if key is None:
            raise Unauthorized("unknown signing key", code="unknown_kid")
        return key


def _is_loopback(host: str | None) -> bool:
    if host in (None, ""):
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class JWKSCache:
    """A JWKS fetched from ``url`` and cached; refetched on expiry or an unknown key id.

    ``url`` must be https, except on loopback (tests, sidecars). ``ca_file`` trusts a private CA.
    """

    def __init__(
        self,
        url: str,
        *,
        ttl_s: float = 300.0,
        min_refetch_interval_s: float = 30.0,
        timeout_s: float = 5.0,
        max_stale_s: float = 3600.0,
        ca_file: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme != "https" and not (
            parts.scheme == "http" and _is_loopback(parts.hostname)
        ):
            raise ConfigError(
                f"the JWKS URL must use https (plain http only on loopback), got {url!r}",
                param="jwks_url",
            )
        if ttl_s <= 0 or timeout_s <= 0 or min_refetch_interval_s < 0 or max_stale_s < 0:
            raise ConfigError(
                "ttl_s and timeout_s must be > 0; min_refetch_interval_s and max_stale_s >= 0"
            )
        self.url = url
        self.ttl_s = ttl_s
        self.min_refetch_interval_s = min_refetch_interval_s
        self.timeout_s = timeout_s
        self.max_stale_s = max_stale_s
        self.ca_file = ca_file
        self._clock = clock
        self._keys: dict[str | None, dict[str, Any]] = {}
        self._fetched_at: float | None = None  # last successful fetch
        self._attempted_at: float | None = None  # last fetch, successful or not
        self._lock = asyncio.Lock()
        self._client: httpx.AsyncClient | None = None
        self.fetches = 0  # how many times the set was fetched (observability, tests)

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            verify: Any = True
            if self.ca_file:
                import ssl

                verify = ssl.create_default_context(cafile=self.ca_file)
            self._client = httpx.AsyncClient(
                timeout=self.timeout_s, follow_redirects=False, verify=verify, trust_env=False
            )
        return self._client

    async def _fetch(self) -> None:
        self.fetches += 1
        self._attempted_at = self._clock()  # failed fetches count too: the rate limit holds
        try:
            async with self._http().stream(
                "GET", self.url, headers={"accept": "application/json"}
            ) as response:
                if response.status_code != 200:
                    raise ValueError(f"HTTP {response.status_code}")
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body.extend(chunk)
                    if len(body) > MAX_JWKS_BYTES:
                        raise ValueError(f"larger than {MAX_JWKS_BYTES} bytes")
            keys = parse_jwks(json.loads(bytes(body)))
        except (httpx.HTTPError, ValueError) as exc:
            logger.warning("jwks fetch failed", extra={"url": self.url, "error": str(exc)})
            return
        self._keys = keys
        self._fetched_at = self._attempted_at
        logger.info("jwks fetched", extra={"url": self.url, "kids": sorted(map(str, keys))})

    def _fresh(self, now: float) -> bool:
        return self._fetched_at is not None and now - self._fetched_at < self.ttl_s

    def _usable(self, now: float) -> bool:
        """Stale keys stand in while the provider is unreachable, but not for ever."""
        return (
            self._fetched_at is not None and now - self._fetched_at < self.ttl_s + self.max_stale_s
        )

    def _may_fetch(self, now: float) -> bool:
        return self._attempted_at is None or now - self._attempted_at >= self.min_refetch_interval_s

    async def key_for(self, kid: str | None) -> dict[str, Any]:
        if self._fresh(self._clock()):
            key = _pick(self._keys, kid)
            if key is not None:
                return key
        async with self._lock:  # concurrent misses wait for one fetch
            now = self._clock()
            key = _pick(self._keys, kid)
            if (key is None or not self._fresh(now)) and self._may_fetch(now):
                await self._fetch()
                now = self._clock()
                key = _pick(self._keys, kid)
            if not self._usable(now):
                raise ServiceUnavailable(
                    "cannot fetch the identity provider's signing keys", retry_after=5
                )
        if key is None:
            raise Unauthorized("unknown signing key", code="unknown_kid")
        return key

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
