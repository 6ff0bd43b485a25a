"""Every module looks the same from outside: the layout DEVELOPERS.md promises."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest

from .conftest import MODULES, ROOT

MAKE_TARGETS = ("install", "test", "bench", "run", "lint")


def test_the_top_level_holds_exactly_the_promised_pieces() -> None:
    for name in ("README.md", "CONCEPTS.md", "Makefile", "pyproject.toml", ".ci/run", "shared"):
        assert (ROOT / name).exists(), name
    folders = {p.name for p in ROOT.iterdir() if (p / "pyproject.toml").is_file()}
    assert folders == set(MODULES) | {"shared"}


@pytest.mark.parametrize(("folder", "package"), sorted(MODULES.items()))
def test_each_module_has_its_parts(folder: str, package: str) -> None:
    module = ROOT / folder
    for part in (
        "pyproject.toml",
        "Makefile",
        "README.md",
        "tests",
        "benchmarks",
        "docker-compose.yml",
        f"src/genai_factory/{package}/__init__.py",
        f"src/genai_factory/{package}/py.typed",
    ):
        assert (module / part).exists(), f"{folder}/{part}"
    # PEP 420: the namespace level has no __init__.py
    assert not (module / "src/genai_factory/__init__.py").exists()
    project = tomllib.loads((module / "pyproject.toml").read_text())["project"]
    assert project["name"] == f"genai-factory-{folder}"
    assert any(dep.startswith("genai-factory-shared") for dep in project["dependencies"])
    makefile = (module / "Makefile").read_text() + (ROOT / "mk/module.mk").read_text()
    for target in MAKE_TARGETS:
        assert re.search(rf"^{target}:", makefile, re.M), f"{folder}: make {target}"
    assert any((module / "tests").glob("test_*.py")), f"{folder} has no tests"


@pytest.mark.parametrize(("folder", "package"), sorted(MODULES.items()))
def test_modules_import_only_shared_and_third_party(folder: str, package: str) -> None:
    others = {f"genai_factory.{pkg}" for pkg in MODULES.values() if pkg != package}
    for source in (ROOT / folder).rglob("*.py"):
        if any(part.startswith(".") for part in source.relative_to(ROOT).parts):
            continue  # caches and virtualenvs (gitignored), e.g. a benchmark peer's own venv
        tree = ast.parse(source.read_text(), filename=str(source))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert not any(name == o or name.startswith(o + ".") for o in others), (
                    f"{source.relative_to(ROOT)} imports {name}: compose through shared contracts"
                )


def test_shared_depends_on_no_module_and_nothing_heavy() -> None:
    project = tomllib.loads((ROOT / "shared/pyproject.toml").read_text())["project"]
    heavy = ("torch", "transformers", "llama", "sentence", "fastapi", "litellm", "redis")
    assert not [d for d in project["dependencies"] if d.lower().startswith(heavy)]


def test_concepts_lists_every_module_with_a_status_for_each_feature() -> None:
    text = (ROOT / "CONCEPTS.md").read_text()
    for folder in MODULES:
        assert f"`{folder}/`" in text, folder
    rows = [line for line in text.splitlines() if line.startswith("| ") and "|" in line[2:]]
    statuses = re.findall(r"\| (working|partial|planned) \|", text)
    assert len(statuses) >= 15 * 6
    # every "working" row names the test or benchmark that proves it, and that file exists
    for line in rows:
        if "| working |" in line:
            proofs = re.findall(r"`([\w./-]+\.py)(?:::[\w]+)?`", line)
            assert proofs, f"working without proof: {line}"
            for proof in proofs:
                assert (ROOT / proof).is_file(), f"{proof} named in CONCEPTS.md does not exist"


def test_readme_names_the_two_commands_and_every_module() -> None:
    text = (ROOT / "README.md").read_text()
    assert "make demo" in text and "make test" in text and "```mermaid" in text
    for folder in MODULES:
        assert f"{folder}/" in text


def test_every_module_readme_says_what_it_is_and_its_status() -> None:
    for folder in MODULES:
        text = (ROOT / folder / "README.md").read_text()
        assert text.startswith("# "), folder
        assert "## Status" in text and "```mermaid" in text and "## Security notes" in text
        if "not built yet" in text.lower():
            assert "| working |" not in text, f"{folder} claims working features while unbuilt"


def test_ci_requires_services_and_runs_make_test() -> None:
    ci = (ROOT / ".ci/run").read_text()
    assert "REQUIRE_SERVICES=1" in ci and "make test" in ci
    assert Path(ROOT / ".ci/run").stat().st_mode & 0o111
