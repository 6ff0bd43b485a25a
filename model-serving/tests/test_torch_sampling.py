"""Sampling: parameter validation, greedy, temperature, top-k, top-p, seeds, log-probabilities."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from genai_factory.serving.torch_engine.sampling import (
    SamplingParams,
    choose_token,
    logprobs_of,
    target_probs,
)
from genai_factory.shared.errors import ValidationError

pytestmark = pytest.mark.unit


@settings(max_examples=150, deadline=None)
@given(
    temperature=st.floats(-1, 3, allow_nan=False),
    top_p=st.floats(-0.5, 1.5, allow_nan=False),
    top_k=st.integers(-3, 50),
    max_tokens=st.integers(-2, 5000),
    logprobs=st.one_of(st.none(), st.integers(-2, 25)),
)
def test_params_are_accepted_exactly_when_valid(
    temperature: float, top_p: float, top_k: int, max_tokens: int, logprobs: int | None
) -> None:
    valid = (
        0 <= temperature <= 2
        and 0 < top_p <= 1
        and top_k >= 0
        and max_tokens >= 1
        and (logprobs is None or 0 <= logprobs <= 20)
    )
    try:
        params = SamplingParams(temperature, top_p, top_k, max_tokens, logprobs=logprobs)
    except ValidationError as error:
        assert not valid and error.param
    else:
        assert valid and params.greedy == (temperature == 0)


@settings(max_examples=100, deadline=None)
@given(
    logits=st.lists(st.floats(-20, 20, allow_nan=False), min_size=2, max_size=30),
    top_p=st.floats(0.01, 1.0),
    top_k=st.integers(0, 40),
    temperature=st.floats(0.05, 2.0),
)
def test_filtered_distribution_is_a_distribution_over_the_best_tokens(
    logits: list[float], top_p: float, top_k: int, temperature: float
) -> None:
    row = torch.tensor(logits)
    params = SamplingParams(temperature=temperature, top_p=top_p, top_k=top_k)
    probs = target_probs(row, params)
    assert math.isclose(float(probs.sum()), 1.0, rel_tol=1e-4)
    kept = probs > 0
    assert kept.any()
    if 0 < top_k < len(logits):
        kth_best = sorted(logits, reverse=True)[top_k - 1]
        assert int(kept.sum()) <= int((row >= kth_best).sum())  # ties at the cut stay
    # whatever is kept is at least as likely as whatever is dropped (equal floats may go either way)
    base = torch.softmax(row / temperature, dim=-1)
    if (~kept).any():
        assert float(base[kept].min()) >= float(base[~kept].max())


def test_top_p_keeps_the_smallest_nucleus() -> None:
    row = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    assert (target_probs(row, SamplingParams(top_p=0.75)) > 0).tolist() == [
        True,
        True,
        False,
        False,
    ]
    assert (target_probs(row, SamplingParams(top_p=0.5)) > 0).sum() == 1
    assert (target_probs(row, SamplingParams(top_k=3)) > 0).sum() == 3


def test_seeds_repeat_and_greedy_takes_the_best() -> None:
    row = torch.randn(100)
    params = SamplingParams(temperature=1.0)
    first = [choose_token(row, params, torch.Generator().manual_seed(9)) for _ in range(5)]
    second = [choose_token(row, params, torch.Generator().manual_seed(9)) for _ in range(5)]
    assert first == second
    generator = torch.Generator().manual_seed(9)
    assert len({choose_token(row, params, generator) for _ in range(30)}) > 1
    greedy = SamplingParams(temperature=0.0)
    assert choose_token(row, greedy, generator) == int(row.argmax())


def test_logprobs_are_normalised_and_sorted() -> None:
    row = torch.tensor([1.0, 2.0, 3.0])
    item = logprobs_of(row, 1, top=2)
    expected = 2.0 - math.log(math.exp(1.0) + math.exp(2.0) + math.exp(3.0))
    assert item.token_id == 1 and math.isclose(item.logprob, expected, rel_tol=1e-5)
    assert [token for token, _ in item.top] == [2, 1]
    assert logprobs_of(row, 0, top=0).top == ()
