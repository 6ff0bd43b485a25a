"""Every module's docker-compose.yml is valid Compose, pinned, loopback-only and non-root where it can be.

No Docker engine runs on our machines, so the files are checked against the Compose
specification's own JSON schema (vendored in tests/compose/, see SOURCE.md).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from .conftest import MODULES, ROOT

SCHEMA = json.loads((Path(__file__).parent / "compose" / "compose-spec.json").read_text())

# Services whose images need root to start and drop privileges themselves (or cannot run without).
ROOT_ALLOWED = {
    "postgres": "the entrypoint initialises the data dir, then runs as the postgres user",
    "milvus": "Milvus standalone writes /var/lib/milvus as root inside its image",
}

# What each module needs around it (ARCHITECTURE.md section 3 and the module issues).
REQUIRED_SERVICES: dict[str, set[str]] = {
    "llm-gateway": {"redis", "postgres"},
    "prompt-framework": {"postgres"},
    "rag-pipeline": {"postgres", "milvus"},
    "agent-orchestration": {"redis", "postgres"},
    "model-serving": {"prometheus"},
    "evaluation": {"postgres"},
    "observability": {"otel-collector", "prometheus", "grafana", "loki"},
    "fine-tuning": {"postgres"},
    "guardrails": {"redis", "postgres"},
    "semantic-cache": {"redis", "postgres"},
    "workflow": {"redis", "rabbitmq", "postgres"},
    "knowledge-graph": {"neo4j"},
    "multimodal": {"milvus"},
    "security": {"postgres", "redis", "vault"},
    "cost-optimization": {"redis", "postgres"},
}


def load(folder: str) -> dict[str, Any]:
    data = yaml.safe_load((ROOT / folder / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def test_the_vendored_schema_rejects_what_compose_rejects() -> None:
    validator = jsonschema.Draft201909Validator(SCHEMA)
    assert validator.is_valid({"services": {"a": {"image": "redis:7"}}})
    assert not validator.is_valid({"services": {"a": {"image": "redis:7", "restart": 5}}})
    assert not validator.is_valid({"services": {"a": {"imagee": "redis:7"}}})
    assert not validator.is_valid({"services": {"a": {"ports": "6379"}}})


@pytest.mark.parametrize("folder", sorted(MODULES))
def test_compose_file_is_valid_against_the_spec(folder: str) -> None:
    errors = sorted(
        jsonschema.Draft201909Validator(SCHEMA).iter_errors(load(folder)), key=lambda e: e.path
    )
    assert not errors, f"{folder}: " + "; ".join(
        f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors
    )


@pytest.mark.parametrize("folder", sorted(MODULES))
def test_images_are_pinned_ports_loopback_and_users_non_root(folder: str) -> None:
    services = load(folder)["services"]
    for name, service in services.items():
        image = service.get("image", "")
        assert re.search(r":[\w][\w.-]*$|@sha256:[0-9a-f]{64}$", image), f"{folder}/{name}: {image}"
        assert not image.endswith(":latest"), f"{folder}/{name} uses :latest"
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{folder}/{name} publishes {port} publicly"
        if name not in ROOT_ALLOWED:
            user = str(service.get("user", ""))
            assert user and not user.startswith(("0", "root")), f"{folder}/{name} runs as root"


@pytest.mark.parametrize("folder", sorted(MODULES))
def test_every_service_the_module_needs_is_there(folder: str) -> None:
    services = set(load(folder)["services"])
    assert REQUIRED_SERVICES[folder] <= services, REQUIRED_SERVICES[folder] - services


@pytest.mark.parametrize("folder", sorted(MODULES))
def test_secrets_come_from_the_environment_and_mounted_files_exist(folder: str) -> None:
    text = (ROOT / folder / "docker-compose.yml").read_text()
    for match in re.finditer(r"(PASSWORD|TOKEN|SECRET[A-Z_]*|AUTH): (.+)", text):
        assert "${" in match.group(2), f"{folder}: literal secret in {match.group(0)}"
    for service in load(folder)["services"].values():
        for volume in service.get("volumes", []):
            source = str(volume).split(":")[0]
            if source.startswith("./"):
                assert (ROOT / folder / source).is_file(), f"{folder}: missing {source}"
