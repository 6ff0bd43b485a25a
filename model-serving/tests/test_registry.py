from __future__ import annotations

from pathlib import Path

import pytest

from genai_factory.serving.registry import PACKAGED_MODELS, PackagedModel, resolve_model_path
from genai_factory.shared.errors import NotFound


def test_packaged_smollm2_is_a_real_gguf_file() -> None:
    path = resolve_model_path("smollm2")
    assert path.is_file()
    with path.open("rb") as handle:
        assert handle.read(4) == b"GGUF"
    assert path.stat().st_size > 50_000_000


def test_a_path_to_a_gguf_file_is_accepted(tmp_path: Path) -> None:
    model = tmp_path / "tiny.gguf"
    model.write_bytes(b"GGUF")
    assert resolve_model_path(str(model)) == model


@pytest.mark.parametrize("name", ["gpt-5", "", "missing.gguf", "/etc/passwd"])
def test_unknown_models_are_not_found_with_the_known_names(name: str) -> None:
    with pytest.raises(NotFound) as info:
        resolve_model_path(name)
    assert info.value.param == "model"
    assert "smollm2" in info.value.message


def test_a_packaged_model_whose_package_is_missing_says_which() -> None:
    ghost = PackagedModel("ghost", "no_such_package_gf", "x.gguf", "", 0)
    with pytest.raises(NotFound, match="no_such_package_gf"):
        ghost.path()
    assert "smollm2" in PACKAGED_MODELS
