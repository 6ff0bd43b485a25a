from __future__ import annotations

import pytest

from genai_factory.serving.engines.llamacpp import LlamaCppChatModel


@pytest.fixture(scope="session")
def smollm2() -> LlamaCppChatModel:
    """The real packaged SmolLM2 model, loaded once for the whole session."""
    return LlamaCppChatModel("smollm2", context_window=1024, threads=2)
