"""One Authenticator in front of several: API keys and JWTs on the same endpoint.

The credential is read once (with every header-injection check) and handed to the first
authenticator that recognises its shape, so an API key is never tried as a JWT and the reverse.

Example:
    >>> import asyncio
    >>> from genai_factory.security.composite import CompositeAuthenticator
    >>> asyncio.run(CompositeAuthenticator([]).authenticate({"x-api-key": "gf-123"}))
    Traceback (most recent call last):
    ...
    genai_factory.shared.errors.Unauthorized: unrecognised credential
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

from genai_factory.security.credentials import bearer_credential
from genai_factory.shared.errors import Unauthorized
from genai_factory.shared.models import Principal

__all__ = ["CompositeAuthenticator", "CredentialAuthenticator"]


@runtime_checkable
class CredentialAuthenticator(Protocol):
    """An authenticator that can say whether a credential is its kind and check a bare one."""

    def accepts(self, credential: str) -> bool: ...

    async def authenticate_credential(self, credential: str) -> Principal: ...


class CompositeAuthenticator:
    """Tries ``authenticators`` in order; the first whose ``accepts`` says yes decides."""

    def __init__(self, authenticators: Sequence[CredentialAuthenticator]) -> None:
        self.authenticators = list(authenticators)

    async def authenticate(self, headers: Mapping[str, str]) -> Principal:
        credential = bearer_credential(headers)
        for authenticator in self.authenticators:
            if authenticator.accepts(credential):
                return await authenticator.authenticate_credential(credential)
        raise Unauthorized("unrecognised credential", code="invalid_credentials")
