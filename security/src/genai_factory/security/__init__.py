"""GenAI Factory Security (catalog item 14): who is calling, what they may do, and keeping
secrets and stored data safe.

Modules (import what you use; nothing heavy loads on ``import genai_factory.security``):

* :mod:`~genai_factory.security.credentials` — one bearer credential from headers, injection-proof
* :mod:`~genai_factory.security.apikeys` / :mod:`~genai_factory.security.keystore` — API keys
* :mod:`~genai_factory.security.jwt_auth` / :mod:`~genai_factory.security.jwks` — JWT via JWKS
* :mod:`~genai_factory.security.oauth` — OAuth2 client-credentials token service
* :mod:`~genai_factory.security.composite` — API keys and JWTs behind one Authenticator
* :mod:`~genai_factory.security.authz` — RBAC + ABAC Authorizer, role administration
* :mod:`~genai_factory.security.secret_store` / :mod:`~genai_factory.security.vault` /
  :mod:`~genai_factory.security.kms` — secrets, master keys in AWS KMS
* :mod:`~genai_factory.security.encryption` — AES-GCM at rest with key rotation
* :mod:`~genai_factory.security.tls` — server/client TLS contexts, mTLS, development PKI
* :mod:`~genai_factory.security.compliance` — retention and right to erasure
* :mod:`~genai_factory.security.audit` — tamper-evident audit trail
* :mod:`~genai_factory.security.cli` — ``gf security keys ...``
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("genai-factory-security")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"

__all__ = ["__version__"]
