"""Speculative decoding: drafting, the accept/reject rule, and output equal to plain decoding."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from genai_factory.serving.torch_engine.model import PagedLlama
from genai_factory.serving.torch_engine.sampling import SamplingParams, verify_draft
from genai_factory.serving.torch_engine.speculative import (
    MAX_BACKOFF_STEPS,
    DraftLength,
    NgramProposer,
    SpeculativeConfig,
    best_draft_length,
)
from genai_factory.shared.errors import ConfigError, ValidationError

from .torch_fixtures import chat_ids, new_core, run_core, smol_paged, smol_tokenizer

__all__ = ["smol_paged", "smol_tokenizer"]  # fixtures, imported for pytest

QUOTE = (
    "Repeat this sentence exactly: The old lighthouse keeper climbed the narrow stairs every "
    "evening to light the lamp for the fishing boats."
)


@pytest.mark.unit
@settings(max_examples=200, deadline=None)
@given(
    tokens=st.lists(st.integers(0, 4), min_size=0, max_size=40),
    limit=st.integers(0, 6),
)
def test_prompt_lookup_continues_an_earlier_occurrence_of_the_suffix(
    tokens: list[int], limit: int
) -> None:
    proposer = NgramProposer(num_tokens=4, max_ngram=3, min_ngram=1)
    draft = proposer.propose(tokens, limit)
    assert len(draft) <= min(limit, 4)
    if not draft:
        # nothing proposed: the last token never occurred before, or there was no room
        assert limit == 0 or len(tokens) < 2 or tokens[-1] not in tokens[:-1]
        return
    matched = False
    for size in range(1, 4):
        suffix = tokens[-size:]
        for start in range(len(tokens) - size):
            if tokens[start : start + size] == suffix:
                follow = tokens[start + size : start + size + len(draft)]
                matched = matched or follow == draft
    assert matched


@pytest.mark.unit
@settings(max_examples=300, deadline=None)
@given(
    acceptance=st.floats(0.0, 1.0),
    cost=st.floats(0.0, 0.99),
    max_tokens=st.integers(1, 8),
)
def test_the_best_draft_length_pays_exactly_when_acceptance_beats_the_cost(
    acceptance: float, cost: float, max_tokens: int
) -> None:
    best = best_draft_length(acceptance, cost, max_tokens)
    assert 0 <= best <= max_tokens

    def rate(k: int) -> float:
        return sum(acceptance**i for i in range(k + 1)) / (1 + k * cost)

    # it is the argmax of expected tokens per unit of work (ties to the shorter draft)
    assert all(rate(best) >= rate(k) - 1e-9 for k in range(max_tokens + 1))
    # a draft token pays for itself only if it is accepted more often than it costs
    if acceptance <= cost - 1e-9:
        assert best == 0
    if acceptance > cost + 1e-6:
        assert best >= 1
    # more acceptance never asks for a shorter draft, more cost never for a longer one
    assert best_draft_length(min(1.0, acceptance + 0.1), cost, max_tokens) >= best
    assert best_draft_length(acceptance, min(0.99, cost + 0.1), max_tokens) <= best


@pytest.mark.unit
@settings(max_examples=200, deadline=None)
@given(
    outcomes=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=60),
    cost=st.floats(0.0, 0.99),
    max_tokens=st.integers(1, 6),
    limit=st.integers(0, 8),
)
def test_the_adaptive_draft_length_stays_within_its_limits(
    outcomes: list[float], cost: float, max_tokens: int, limit: int
) -> None:
    control = DraftLength(max_tokens, cost)
    for share in outcomes:
        length = control.next_length(limit)
        assert 0 <= length <= min(max_tokens, limit)
        control.update(length, round(share * length))
        assert 0.0 <= control.acceptance <= 1.0
        assert 1 <= control.backoff <= MAX_BACKOFF_STEPS


@pytest.mark.unit
def test_a_drafter_that_never_hits_is_switched_off_and_only_probed_rarely() -> None:
    control = DraftLength(max_tokens=4, cost_per_token=0.1)
    drafted = []
    for _ in range(400):
        length = control.next_length(4)
        drafted.append(length)
        control.update(length, 0)
    # after a short start, drafts are single-token probes at growing intervals
    late = drafted[100:]
    assert max(late) <= 1
    assert sum(late) <= len(late) // MAX_BACKOFF_STEPS + 1
    # a drafter that always hits keeps the longest draft
    control = DraftLength(max_tokens=4, cost_per_token=0.1)
    lengths = []
    for _ in range(20):
        length = control.next_length(4)
        lengths.append(length)
        control.update(length, length)
    assert lengths[-10:] == [4] * 10
    # and one that starts to hit after a long miss streak recovers through the probes
    control = DraftLength(max_tokens=4, cost_per_token=0.1)
    for _ in range(100):
        control.update(control.next_length(4), 0)
    recovered = []
    for _ in range(3 * MAX_BACKOFF_STEPS):
        length = control.next_length(4)
        recovered.append(length)
        control.update(length, length)
    assert recovered[-1] == 4


@pytest.mark.unit
def test_greedy_verification_keeps_the_agreeing_prefix_plus_the_target_token() -> None:
    logits = torch.full((4, 6), -5.0)
    for row, best in enumerate([3, 1, 4, 2]):
        logits[row, best] = 5.0
    greedy = SamplingParams(temperature=0.0)
    generator = torch.Generator().manual_seed(0)
    assert verify_draft(logits, [3, 1, 4], None, greedy, generator) == [3, 1, 4, 2]
    assert verify_draft(logits, [3, 0, 4], None, greedy, generator) == [3, 1]
    assert verify_draft(logits, [5, 1, 4], None, greedy, generator) == [3]


@pytest.mark.unit
@pytest.mark.parametrize("with_draft_probs", [False, True])
def test_sampled_verification_keeps_the_target_distribution(with_draft_probs: bool) -> None:
    target = torch.tensor([0.5, 0.3, 0.2])
    logits = torch.log(target).repeat(2, 1)
    params = SamplingParams(temperature=1.0)
    generator = torch.Generator().manual_seed(1)
    draft_q = torch.tensor([[0.1, 0.1, 0.8]])
    counts = torch.zeros(3)
    trials = 1500
    for _ in range(trials):
        if with_draft_probs:  # a draft model samples its token from its own distribution q
            token = int(torch.multinomial(draft_q[0], 1, generator=generator))
            first = verify_draft(logits, [token], draft_q, params, generator)[0]
        else:  # a deterministic drafter proposes the target's least likely token every time
            first = verify_draft(logits, [2], None, params, generator)[0]
        counts[first] += 1
    frequencies = counts / trials
    assert torch.allclose(frequencies, target, atol=0.04), frequencies


@pytest.mark.unit
def test_bad_speculative_settings_are_config_errors(smol_paged: PagedLlama) -> None:
    with pytest.raises(ConfigError):
        SpeculativeConfig("ngram", num_tokens=0)
    with pytest.raises(ConfigError):
        SpeculativeConfig("ngram", min_ngram=3, max_ngram=2)
    with pytest.raises(ConfigError):
        SpeculativeConfig("draft", draft_layers=0)
    with pytest.raises(ConfigError):
        SpeculativeConfig("ngram", verify_cost=1.0)
    with pytest.raises(ConfigError):
        SpeculativeConfig("ngram", max_batch_size=0)
    assert SpeculativeConfig("ngram").draft_cost(30) == 0.0
    assert SpeculativeConfig("draft", draft_layers=15).draft_cost(30) == 0.5
    with pytest.raises(ValidationError):
        new_core(smol_paged, speculative=SpeculativeConfig("draft", draft_layers=30))


@pytest.fixture(scope="module")
def plain_output(smol_paged: PagedLlama, smol_tokenizer: Any) -> dict[str, list[int]]:
    prompts = {"quote": chat_ids(smol_tokenizer, QUOTE)}
    params = SamplingParams(temperature=0.0, max_tokens=16)
    tokens, _, _ = run_core(new_core(smol_paged), prompts, params)
    return tokens


@pytest.mark.integration
def test_prompt_lookup_gives_the_same_greedy_output_in_fewer_steps(
    smol_paged: PagedLlama, smol_tokenizer: Any, plain_output: dict[str, list[int]]
) -> None:
    prompts = {"quote": chat_ids(smol_tokenizer, QUOTE)}
    core = new_core(smol_paged, speculative=SpeculativeConfig("ngram", num_tokens=4))
    params = SamplingParams(temperature=0.0, max_tokens=16)
    tokens, _, _ = run_core(core, prompts, params)
    assert tokens == plain_output
    assert core.stats.accepted_draft_tokens > 0
    assert core.stats.steps < len(tokens["quote"])  # several tokens per step
    assert core.blocks.num_free_blocks == core.blocks.num_blocks


@pytest.mark.integration
@pytest.mark.slow
def test_a_self_speculative_draft_model_gives_the_same_greedy_output(
    smol_paged: PagedLlama, smol_tokenizer: Any, plain_output: dict[str, list[int]]
) -> None:
    prompts = {"quote": chat_ids(smol_tokenizer, QUOTE), "other": chat_ids(smol_tokenizer, "Hi")}
    core = new_core(
        smol_paged, speculative=SpeculativeConfig("draft", num_tokens=2, draft_layers=26)
    )
    tokens, _, _ = run_core(core, prompts, SamplingParams(temperature=0.0, max_tokens=16))
    assert tokens["quote"] == plain_output["quote"]
    assert core.stats.draft_tokens > 0
    assert core.blocks.num_free_blocks == core.blocks.num_blocks


@pytest.mark.integration
@pytest.mark.slow
def test_speculative_sampling_repeats_with_a_seed(
    smol_paged: PagedLlama, smol_tokenizer: Any
) -> None:
    prompts = {"quote": chat_ids(smol_tokenizer, QUOTE)}
    params = SamplingParams(temperature=0.7, top_p=0.9, max_tokens=6, seed=5)
    runs = []
    for method in ("ngram", "draft"):
        speculative = SpeculativeConfig(method, num_tokens=2, draft_layers=4)  # type: ignore[arg-type]
        for _ in range(2):
            tokens, _, _ = run_core(new_core(smol_paged, speculative=speculative), prompts, params)
            runs.append(tokens["quote"])
    assert runs[0] == runs[1] and runs[2] == runs[3]
    assert all(len(run) == 6 or run[-1] == 2 for run in runs)


@pytest.mark.integration
def test_adaptive_prompt_lookup_gives_the_same_greedy_output(
    smol_paged: PagedLlama, smol_tokenizer: Any, plain_output: dict[str, list[int]]
) -> None:
    prompts = {"quote": chat_ids(smol_tokenizer, QUOTE)}
    speculative = SpeculativeConfig("ngram", num_tokens=4, adaptive=True)
    core = new_core(smol_paged, speculative=speculative)
    tokens, _, _ = run_core(core, prompts, SamplingParams(temperature=0.0, max_tokens=16))
    assert tokens == plain_output
    assert core.stats.accepted_draft_tokens > 0
    assert core.blocks.num_free_blocks == core.blocks.num_blocks


@pytest.mark.integration
def test_speculation_is_off_while_more_requests_run_than_its_batch_limit(
    smol_paged: PagedLlama, smol_tokenizer: Any
) -> None:
    quote = chat_ids(smol_tokenizer, QUOTE)
    params = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True)
    speculative = SpeculativeConfig("ngram", num_tokens=4, max_batch_size=1)
    core = new_core(smol_paged, speculative=speculative)
    run_core(core, {"a": quote, "b": quote}, params)  # both run to the end together
    assert core.stats.max_running == 2 and core.stats.draft_tokens == 0
    alone = new_core(smol_paged, speculative=speculative)
    run_core(alone, {"a": quote}, params)
    assert alone.stats.draft_tokens > 0


@pytest.mark.integration
@pytest.mark.slow
def test_an_adaptive_draft_model_that_does_not_pay_stops_drafting(
    smol_paged: PagedLlama, smol_tokenizer: Any, plain_output: dict[str, list[int]]
) -> None:
    prompts = {"quote": chat_ids(smol_tokenizer, QUOTE)}
    # 26 of 30 layers: a draft token costs 0.87 of a step, more than its acceptance pays back
    speculative = SpeculativeConfig("draft", num_tokens=2, draft_layers=26, adaptive=True)
    core = new_core(smol_paged, speculative=speculative)
    tokens, _, _ = run_core(core, prompts, SamplingParams(temperature=0.0, max_tokens=16))
    assert tokens == plain_output
    assert 0 < core.stats.draft_tokens <= len(tokens["quote"]) // 3  # a few probes only
