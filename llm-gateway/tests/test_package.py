"""The package installs as its own distribution, as a portion of the genai_factory namespace."""

import importlib.metadata

import pytest

import genai_factory
import genai_factory.gateway as module


def test_version_comes_from_the_installed_distribution() -> None:
    assert module.__version__ == importlib.metadata.version("genai-factory-llm-gateway")


def test_genai_factory_is_a_namespace_shared_with_the_foundation() -> None:
    # PEP 420: no __init__.py, several src/ folders contribute to one package path
    assert getattr(genai_factory, "__file__", None) is None
    portions = [str(p) for p in genai_factory.__path__]
    assert any(p.endswith("llm-gateway/src/genai_factory") for p in portions)
    assert any(p.endswith("shared/src/genai_factory") for p in portions)


def test_only_the_version_is_looked_up_lazily() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = module.no_such_name
