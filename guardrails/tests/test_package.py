"""The package installs as its own distribution, as a portion of the genai_factory namespace."""

import importlib.metadata

import genai_factory
import genai_factory.guardrails as module


def test_version_comes_from_the_installed_distribution() -> None:
    assert module.__version__ == importlib.metadata.version("genai-factory-guardrails")


def test_genai_factory_is_a_namespace_shared_with_the_foundation() -> None:
    # PEP 420: no __init__.py, several src/ folders contribute to one package path
    assert getattr(genai_factory, "__file__", None) is None
    portions = [str(p) for p in genai_factory.__path__]
    assert any(p.endswith("guardrails/src/genai_factory") for p in portions)
    assert any(p.endswith("shared/src/genai_factory") for p in portions)
