"""Golden tests: our forward pass, paged cache and scheduler against transformers' generate().

Greedy tokens must be identical and every step's log-probabilities (the chosen token's and the
top 5) within 1e-3 of transformers' own logits, for a request alone, for requests of different
lengths joining and leaving a running batch, and for requests served from the prefix cache.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from genai_factory.serving.torch_engine.model import PagedLlama
from genai_factory.serving.torch_engine.sampling import SamplingParams, TokenLogprob
from genai_factory.serving.torch_engine.speculative import SpeculativeConfig

from .torch_fixtures import (
    SYSTEM_PROMPT,
    chat_ids,
    hf_greedy,
    new_core,
    run_core,
    smol_hf,
    smol_paged,
    smol_tokenizer,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]
__all__ = ["smol_hf", "smol_paged", "smol_tokenizer"]  # fixtures, imported for pytest

NEW_TOKENS = 10
TOLERANCE = 1e-3
GREEDY = SamplingParams(temperature=0.0, max_tokens=NEW_TOKENS, logprobs=5)
QUESTIONS = {
    "short": "Hi!",
    "capital": "What is the capital of France?",
    "haiku": "Write a haiku about the sea at night.",
    "long": "Explain in simple words, for a ten year old child who likes football and "
    "drawing, why the sky looks blue during the day but red at sunset.",
}
QUOTE = (
    "Repeat this sentence exactly: The old lighthouse keeper climbed the narrow stairs every "
    "evening to light the lamp for the fishing boats."
)


def _assert_matches_transformers(
    prompt: tuple[int, ...], tokens: list[int], logprobs: list[TokenLogprob]
) -> None:
    expected_tokens, expected = hf_greedy(prompt, NEW_TOKENS)
    assert tokens == expected_tokens
    assert len(logprobs) == len(tokens)
    for step, item in enumerate(logprobs):
        assert abs(item.logprob - float(expected[step, item.token_id])) < TOLERANCE
        reference_top = torch.topk(expected[step], 5)
        ours = dict(item.top)
        assert len(ours) == 5
        for token, value in zip(reference_top.indices, reference_top.values, strict=True):
            if int(token) in ours:
                assert abs(ours[int(token)] - float(value)) < TOLERANCE
            else:  # a tie at the 5th place may order differently; it must be a near tie
                assert abs(float(value) - min(ours.values())) < TOLERANCE


@pytest.fixture(scope="module")
def prompts(smol_tokenizer: Any) -> dict[str, tuple[int, ...]]:
    return {name: chat_ids(smol_tokenizer, text) for name, text in QUESTIONS.items()}


def test_our_forward_pass_equals_transformers_logits(
    smol_hf: Any, smol_paged: PagedLlama, prompts: dict[str, tuple[int, ...]]
) -> None:
    prompt = prompts["long"]
    with torch.inference_mode():
        reference = torch.log_softmax(smol_hf(torch.tensor([prompt])).logits[0, :-1], dim=-1)
    expected = reference.gather(1, torch.tensor(prompt[1:])[:, None]).squeeze(1)
    assert torch.allclose(smol_paged.score(prompt), expected, atol=TOLERANCE)


def test_greedy_tokens_and_logprobs_match_transformers_alone(
    smol_paged: PagedLlama, prompts: dict[str, tuple[int, ...]]
) -> None:
    for name in ("capital", "long"):
        core = new_core(smol_paged, enable_prefix_caching=False)
        tokens, logprobs, _ = run_core(core, {name: prompts[name]}, GREEDY)
        _assert_matches_transformers(prompts[name], tokens[name], logprobs[name])
        assert core.blocks.num_free_blocks == core.blocks.num_blocks


def test_greedy_output_is_unchanged_under_continuous_batching(
    smol_paged: PagedLlama, prompts: dict[str, tuple[int, ...]]
) -> None:
    core = new_core(smol_paged, enable_prefix_caching=False)
    # two start together; two join while those decode; all leave at different steps
    arrivals = {"short": 0, "capital": 0, "haiku": 2, "long": 5}
    tokens, logprobs, _ = run_core(core, prompts, GREEDY, arrivals)
    for name, prompt in prompts.items():
        _assert_matches_transformers(prompt, tokens[name], logprobs[name])
    assert core.stats.max_running == 4  # they really shared steps
    assert core.stats.steps < sum(len(t) for t in tokens.values())
    assert core.blocks.num_free_blocks == core.blocks.num_blocks


def test_a_shared_prefix_is_served_from_cache_with_identical_output(
    smol_tokenizer: Any, smol_paged: PagedLlama
) -> None:
    first = chat_ids(smol_tokenizer, "When do you open on Sundays?", SYSTEM_PROMPT)
    second = chat_ids(smol_tokenizer, "Can children get a card?", SYSTEM_PROMPT)
    shared = next(i for i, (a, b) in enumerate(zip(first, second, strict=False)) if a != b)
    assert shared >= 64  # a long common system prompt: at least 4 blocks of 16
    core = new_core(smol_paged, enable_prefix_caching=True)
    run_core(core, {"first": first}, GREEDY)
    tokens, logprobs, cached = run_core(core, {"second": second}, GREEDY)
    assert cached["second"] == (shared // 16) * 16
    assert core.blocks.stats.hit_tokens == cached["second"]
    _assert_matches_transformers(second, tokens["second"], logprobs["second"])
    # the same request on a cold cache gives the same tokens
    cold_tokens, _, cold_cached = run_core(
        new_core(smol_paged, enable_prefix_caching=False), {"second": second}, GREEDY
    )
    assert cold_cached["second"] == 0 and cold_tokens == tokens


@pytest.mark.parametrize(
    "speculative",
    [
        SpeculativeConfig("ngram", num_tokens=4),
        SpeculativeConfig("ngram", num_tokens=4, adaptive=True),
        SpeculativeConfig("draft", num_tokens=2, draft_layers=26),
    ],
    ids=["prompt-lookup", "prompt-lookup-adaptive", "draft-model"],
)
def test_speculative_decoding_under_continuous_batching_matches_transformers(
    smol_tokenizer: Any,
    smol_paged: PagedLlama,
    prompts: dict[str, tuple[int, ...]],
    speculative: SpeculativeConfig,
) -> None:
    batch = dict(prompts) | {"quote": chat_ids(smol_tokenizer, QUOTE)}
    core = new_core(smol_paged, enable_prefix_caching=True, speculative=speculative)
    # drafts of several requests are verified in the same steps as others' prompts and decodes
    arrivals = {"quote": 0, "short": 0, "capital": 1, "haiku": 2, "long": 4}
    tokens, logprobs, _ = run_core(core, batch, GREEDY, arrivals)
    for name, prompt in batch.items():
        _assert_matches_transformers(prompt, tokens[name], logprobs[name])
    assert core.stats.max_running >= 3  # they really shared steps
    assert core.stats.accepted_draft_tokens > 0  # speculation really ran in the batch
    assert core.blocks.num_free_blocks == core.blocks.num_blocks
