"""AWS plumbing for Bedrock: Signature Version 4 request signing and the binary event stream.

Both follow the published specifications (no boto3/botocore on the hot path). The signer is
the shared one (:mod:`genai_factory.shared.sigv4`, re-exported here); ``verify_v4`` checks a
received request with it, for the test servers. The event-stream codec checks both CRCs of
every message.

Example (the signer's own example, AWS's documented one, is in the shared module):
    >>> decoder = EventStreamDecoder()
    >>> [m.headers[":event-type"] for m in decoder.feed(encode_event("messageStop", b"{}"))]
    ['messageStop']
"""

from __future__ import annotations

import hashlib
import hmac
import re
import struct
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from genai_factory.shared.sigv4 import sign_v4, signature

__all__ = [
    "EventMessage",
    "EventStreamDecoder",
    "EventStreamError",
    "encode_event",
    "encode_message",
    "sign_v4",
    "verify_v4",
]


_AUTHORIZATION = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<day>\d{8})/(?P<region>[^/]+)/"
    r"(?P<service>[^/]+)/aws4_request, SignedHeaders=(?P<signed>[a-z0-9;-]+), "
    r"Signature=(?P<signature>[0-9a-f]{64})$"
)


def verify_v4(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    access_key_id: str,
    secret_access_key: str,
    region: str,
    service: str,
) -> str | None:
    """Why a received request's SigV4 signature is wrong, or None when it is right."""
    lowered = {k.lower(): v for k, v in headers.items()}
    match = _AUTHORIZATION.match(lowered.get("authorization", ""))
    if match is None:
        return "missing or malformed Authorization header"
    amz_date = lowered.get("x-amz-date", "")
    if match["key"] != access_key_id:
        return "unknown access key"
    if (match["region"], match["service"]) != (region, service):
        return "wrong credential scope"
    if match["day"] != amz_date[:8]:
        return "credential date does not match x-amz-date"
    signed = match["signed"].split(";")
    if "host" not in signed or "x-amz-date" not in signed:
        return "host and x-amz-date must be signed"
    expected, _, _ = signature(
        method,
        url,
        {name: lowered.get(name, "") for name in signed},
        hashlib.sha256(body).hexdigest(),
        amz_date=amz_date,
        region=region,
        service=service,
        secret_access_key=secret_access_key,
    )
    if not hmac.compare_digest(expected, match["signature"]):
        return "signature does not match"
    return None


# ------------------------------------------------------------------------------ event stream


class EventStreamError(ValueError):
    """A corrupt event-stream message (bad length or CRC)."""


@dataclass(frozen=True, slots=True)
class EventMessage:
    headers: dict[str, str | int | bytes | bool]
    payload: bytes


_FIXED = {2: 1, 3: 2, 4: 4, 5: 8, 8: 8, 9: 16}


def _parse_headers(raw: bytes) -> dict[str, str | int | bytes | bool]:
    headers: dict[str, str | int | bytes | bool] = {}
    at = 0
    while at < len(raw):
        size = raw[at]
        name = raw[at + 1 : at + 1 + size].decode("utf-8")
        at += 1 + size
        kind = raw[at]
        at += 1
        value: str | int | bytes | bool
        if kind in (0, 1):
            value = kind == 0
        elif kind in (6, 7):
            (length,) = struct.unpack_from(">H", raw, at)
            blob = raw[at + 2 : at + 2 + length]
            value = blob.decode("utf-8") if kind == 7 else blob
            at += 2 + length
        elif kind in _FIXED:
            width = _FIXED[kind]
            blob = raw[at : at + width]
            value = int.from_bytes(blob, "big", signed=kind != 9)
            at += width
        else:
            raise EventStreamError(f"unknown header value type {kind}")
        headers[name] = value
    return headers


class EventStreamDecoder:
    """Feed raw bytes in any pieces; get whole, CRC-checked messages out."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> Iterator[EventMessage]:
        """The messages ``data`` completes, in order (a corrupt one raises when reached)."""
        self._buffer += data
        while len(self._buffer) >= 12:
            total, header_length, prelude_crc = struct.unpack_from(">III", self._buffer)
            if zlib.crc32(self._buffer[:8]) != prelude_crc:
                raise EventStreamError("prelude CRC mismatch")
            if total < 16 or header_length > total - 16:
                raise EventStreamError("impossible message length")
            if len(self._buffer) < total:
                break
            frame = bytes(self._buffer[:total])
            del self._buffer[:total]
            (message_crc,) = struct.unpack_from(">I", frame, total - 4)
            if zlib.crc32(frame[:-4]) != message_crc:
                raise EventStreamError("message CRC mismatch")
            headers = _parse_headers(frame[12 : 12 + header_length])
            yield EventMessage(headers, frame[12 + header_length : -4])

    @property
    def pending(self) -> int:
        """Bytes of an incomplete message still buffered."""
        return len(self._buffer)


def encode_message(headers: Mapping[str, str], payload: bytes) -> bytes:
    """One event-stream message with string headers (the test servers speak it too)."""
    raw_headers = b""
    for name, value in headers.items():
        encoded_name, encoded_value = name.encode(), value.encode()
        raw_headers += bytes([len(encoded_name)]) + encoded_name + b"\x07"
        raw_headers += struct.pack(">H", len(encoded_value)) + encoded_value
    total = 12 + len(raw_headers) + len(payload) + 4
    prelude = struct.pack(">II", total, len(raw_headers))
    head = prelude + struct.pack(">I", zlib.crc32(prelude)) + raw_headers + payload
    return head + struct.pack(">I", zlib.crc32(head))


def encode_event(event_type: str, payload: bytes) -> bytes:
    """A Bedrock-style ``event`` message of ``event_type``."""
    return encode_message(
        {
            ":event-type": event_type,
            ":content-type": "application/json",
            ":message-type": "event",
        },
        payload,
    )
