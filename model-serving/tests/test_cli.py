from __future__ import annotations

import pytest
from click.testing import CliRunner

from genai_factory.serving.cli import serving


def test_models_lists_the_packaged_model() -> None:
    result = CliRunner().invoke(serving, ["models"])
    assert result.exit_code == 0, result.output
    assert "smollm2" in result.output
    assert ".gguf" in result.output


@pytest.mark.integration
@pytest.mark.parametrize("stream", ["--stream", "--no-stream"])
def test_chat_prints_a_real_answer(stream: str) -> None:
    result = CliRunner().invoke(
        serving, ["chat", "What is 2 plus 2?", "--max-tokens", "12", stream]
    )
    assert result.exit_code == 0, result.output
    assert len(result.output.strip()) > 0


def test_chat_rejects_a_negative_token_cap() -> None:
    result = CliRunner().invoke(serving, ["chat", "hi", "--max-tokens", "-1"])
    assert result.exit_code == 2
    assert "max-tokens" in result.output
