from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# folder -> package, as DEVELOPERS.md lays them out
MODULES: dict[str, str] = {
    "llm-gateway": "gateway",
    "prompt-framework": "prompts",
    "rag-pipeline": "rag",
    "agent-orchestration": "agents",
    "model-serving": "serving",
    "evaluation": "evaluation",
    "observability": "observability",
    "fine-tuning": "finetuning",
    "guardrails": "guardrails",
    "semantic-cache": "cache",
    "workflow": "workflow",
    "knowledge-graph": "graph",
    "multimodal": "multimodal",
    "security": "security",
    "cost-optimization": "cost",
}


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT
