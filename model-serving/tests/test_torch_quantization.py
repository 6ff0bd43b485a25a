"""INT8 and INT4 weights: the quantised layers, and the quantised model's outputs and perplexity."""

from __future__ import annotations

import functools
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from genai_factory.serving.torch_engine.model import PagedLlama
from genai_factory.serving.torch_engine.quantization import (
    Int4Linear,
    Int8Linear,
    quantize_model,
)
from genai_factory.serving.torch_engine.sampling import SamplingParams
from genai_factory.shared.errors import ConfigError

from .torch_fixtures import chat_ids, new_core, run_core, smol_hf, smol_paged, smol_tokenizer

__all__ = ["smol_hf", "smol_paged", "smol_tokenizer"]  # fixtures, imported for pytest

# held out: not a prompt used anywhere else in these tests
HELD_OUT = (
    "The river runs through the middle of the old town. In summer, children swim near the "
    "bridge while their parents sit in the shade and read. In winter the water freezes, and "
    "people walk across the ice to reach the market on the other side."
)


def _linear(rows: int, columns: int, seed: int = 0) -> torch.nn.Linear:
    torch.manual_seed(seed)
    return torch.nn.Linear(columns, rows, bias=False)


@pytest.mark.unit
@settings(max_examples=25, deadline=None)
@given(
    rows=st.integers(1, 12),
    groups=st.integers(1, 4),
    group_size=st.sampled_from([8, 16, 32]),
    seed=st.integers(0, 1000),
)
def test_int4_error_is_at_most_half_a_step_per_group(
    rows: int, groups: int, group_size: int, seed: int
) -> None:
    layer = _linear(rows, groups * group_size, seed)
    quantised = Int4Linear.from_linear(layer, group_size=group_size)
    weight = layer.weight.detach().reshape(rows, groups, group_size)
    step = (weight.amax(-1) - weight.amin(-1)) / 15
    error = (quantised.dequantize().reshape(rows, groups, group_size) - weight).abs().amax(-1)
    assert bool((error <= step / 2 + 1e-6).all())
    assert quantised.packed.dtype == torch.uint8
    assert quantised.packed.numel() == rows * groups * group_size // 2  # two weights a byte


@pytest.mark.unit
def test_int4_is_exact_on_weights_already_on_a_4bit_grid() -> None:
    # what a Q4_1 GGUF holds: per group of 32, 16 evenly spaced levels from min to max
    torch.manual_seed(3)
    codes = torch.randint(0, 16, (8, 64)).float()
    codes[:, ::32] = 0.0
    codes[:, 1::32] = 15.0
    scale, low = torch.rand(8, 2, 1) + 0.1, torch.randn(8, 2, 1)
    weight = (codes.reshape(8, 2, 32) * scale + low).reshape(8, 64)
    layer = torch.nn.Linear(64, 8, bias=False)
    layer.weight.data = weight
    assert torch.allclose(Int4Linear.from_linear(layer, 32).dequantize(), weight, atol=1e-5)


@pytest.mark.unit
@pytest.mark.parametrize("kind", ["int8", "int4"])
def test_the_torch_kernels_agree_with_our_dequantising_path(kind: str) -> None:
    layer = _linear(48, 64)
    x = torch.randn(3, 5, 64)
    if kind == "int8":
        ours, kernel = Int8Linear.from_linear(layer), Int8Linear.from_linear(layer, True)
        assert ours.weight_int8.dtype == torch.int8
    else:
        ours, kernel = Int4Linear.from_linear(layer, 32), Int4Linear.from_linear(layer, 32, True)
        assert torch.allclose(kernel.dequantize(), ours.dequantize(), atol=1e-4)
    assert torch.allclose(kernel(x), ours(x), atol=1e-3)
    reference = layer(x)
    bound = 0.02 if kind == "int8" else 0.2
    assert (ours(x) - reference).abs().max() < bound * reference.abs().max()


@pytest.mark.unit
def test_bad_quantisation_settings_are_config_errors() -> None:
    model = torch.nn.Module()
    with pytest.raises(ConfigError):
        quantize_model(model, "int3")
    assert quantize_model(model, "none") is model
    with pytest.raises(ConfigError, match="group_size"):
        Int4Linear.from_linear(_linear(4, 48), group_size=32)


@functools.cache
def _quantised(mode: str) -> PagedLlama:
    from .torch_fixtures import _loaded

    model = quantize_model(PagedLlama.from_hf(_loaded()[0]), mode)
    assert isinstance(model, PagedLlama)
    return model


def _perplexity(model: PagedLlama, tokenizer: Any) -> float:
    ids = tokenizer.encode(HELD_OUT, add_special_tokens=False)
    return float(torch.exp(-model.score(ids).mean()))


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize(
    ("mode", "max_ratio", "agree"),
    # measured: int8 (dynamic activations) +21%, int8 weight-only +2%, int4 on the GGUF's own
    # Q4_1 grid (group 32) +0%
    [("int8", 1.3, 4), ("int8-weight-only", 1.05, 4), ("int4", 1.02, 8)],
)
def test_quantised_models_stay_close_to_fp32(
    mode: str,
    max_ratio: float,
    agree: int,
    smol_paged: PagedLlama,
    smol_tokenizer: Any,
) -> None:
    quantised = _quantised(mode)
    assert quantised.weight_bytes() < 0.6 * smol_paged.weight_bytes()
    baseline = _perplexity(smol_paged, smol_tokenizer)
    assert _perplexity(quantised, smol_tokenizer) < max_ratio * baseline
    prompts = {"q": chat_ids(smol_tokenizer, "What is the capital of France?")}
    params = SamplingParams(temperature=0.0, max_tokens=agree)
    fp32, _, _ = run_core(new_core(smol_paged), prompts, params)
    ours, _, _ = run_core(new_core(quantised), prompts, params)
    assert ours == fp32
    with pytest.raises(ConfigError, match="already"):
        quantize_model(quantised, mode)
