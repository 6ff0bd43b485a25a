"""Test support shared by every module: real-service fixtures that skip, or fail under CI.

The fixtures are registered as a pytest plugin (entry point ``pytest11``), so any module's tests
can ask for ``redis_url``, ``redis_namespace``, ``postgres_dsn``, ``postgres_schema_dsn`` or
``rabbitmq_url`` without importing anything.
"""

from genai_factory.shared.testing.services import (
    ServiceUnavailableForTest,
    require_service,
    services_required,
)

__all__ = ["ServiceUnavailableForTest", "require_service", "services_required"]
