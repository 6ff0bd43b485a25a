"""The learned second stage: packaged model, its features, and its place in the cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genai_factory.cache.core import SemanticCache
from genai_factory.cache.entry import CacheScope
from genai_factory.cache.pairs import Pair, evaluate_pairs, pair_scores
from genai_factory.cache.policy import ThresholdPolicy
from genai_factory.cache.verify import (
    CHECKS,
    PAIR_FEATURES,
    PairModel,
    PairVerifier,
    extract_features,
    pair_features,
)

from .conftest import LetterEmbedder


def test_the_packaged_model_is_complete_and_records_how_it_was_made() -> None:
    model = PairModel.load()
    assert model.features == PAIR_FEATURES
    assert set(model.hard_checks) <= set(CHECKS)
    assert 0.0 < model.threshold < 1.0 and 0.0 < model.similarity_threshold < 1.0
    assert model.provenance["selected_on"] == "dev splits"
    assert model.provenance["script"].endswith("train_verifier.py")
    # the cache's global gate is the one tuned with the model
    assert ThresholdPolicy().default == model.similarity_threshold


def test_probability_follows_the_logistic_formula() -> None:
    model = PairModel.load()
    values = pair_features(extract_features("a b"), extract_features("a c"), 0.9)
    z = model.intercept + sum(
        c * (v - m) / s
        for c, v, m, s in zip(model.coef, values, model.mean, model.scale, strict=True)
    )
    assert model.probability(values) == pytest.approx(1 / (1 + 2.718281828459045 ** (-z)))


def test_round_trip_and_bad_models_are_refused(tmp_path: Path) -> None:
    model = PairModel.load()
    path = tmp_path / "m.json"
    path.write_text(json.dumps(model.to_dict()))
    assert PairModel.load(path) == model
    data = model.to_dict()
    with pytest.raises(ValueError, match="not a pair model"):
        PairModel.from_dict({k: v for k, v in data.items() if k != "coef"})
    with pytest.raises(ValueError, match="features"):
        PairModel.from_dict({**data, "features": ["cosine"]})
    with pytest.raises(ValueError, match="one value per feature"):
        PairModel.from_dict({**data, "coef": data["coef"][:-1]})
    with pytest.raises(ValueError, match="hard checks"):
        PairModel.from_dict({**data, "hard_checks": ["vibes"]})


def test_the_model_rejects_below_its_threshold_and_reports_its_probability() -> None:
    model = PairModel.load()
    strict = PairModel.from_dict({**model.to_dict(), "threshold": 0.999999})
    lenient = PairModel.from_dict({**model.to_dict(), "threshold": 0.0})
    a, b = "How do I reset my password?", "How can I reset my password"
    verdict = PairVerifier.learned(strict).verify(a, b, similarity=0.5)
    assert not verdict.passed and verdict.reasons == ("model",)
    assert verdict.probability is not None and verdict.probability < 0.999999
    assert PairVerifier.learned(lenient).verify(a, b, similarity=0.95).passed
    # hard checks still reject outright, before the model runs
    hard = PairVerifier.learned(lenient).verify("Enable 2FA", "Disable 2FA", similarity=0.99)
    assert hard.reasons == ("polarity",) and hard.probability is None
    # without a similarity only the rules run
    assert PairVerifier.learned(strict).verify(a, b).passed


WORDS = st.sampled_from(
    [
        "how",
        "can",
        "i",
        "reset",
        "my",
        "password",
        "the",
        "server",
        "for",
        "a",
        "team",
        "report",
        "5",
        "Paris",
    ]
)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(WORDS, min_size=1, max_size=10).map(" ".join),
    st.lists(WORDS, min_size=1, max_size=10).map(" ".join),
    st.floats(min_value=-1.0, max_value=1.0),
)
def test_features_are_bounded_symmetric_and_the_probability_is_a_probability(
    a: str, b: str, similarity: float
) -> None:
    fa, fb = extract_features(a), extract_features(b)
    forward, backward = pair_features(fa, fb, similarity), pair_features(fb, fa, similarity)
    assert len(forward) == len(PAIR_FEATURES)
    assert forward == pytest.approx(backward)
    assert all(0.0 <= v <= 1.0 for v in forward[1:])
    assert 0.0 <= PairModel.load().probability(forward) <= 1.0


def test_pair_scores_decide_at_any_probability() -> None:
    pairs = [
        Pair(a="How do I reset my password?", b="How can I reset my password", label=True),
        Pair(a="How do I enable 2FA?", b="How do I disable 2FA?", label=False),
        Pair(a="What is the capital of France?", b="What is the capital of France?", label=True),
    ]
    scores = pair_scores(pairs, LetterEmbedder(), PairVerifier.learned())
    assert scores.hard_passed == [True, False, True]
    assert scores.probability[1] is None and scores.probability[0] is not None
    everything = scores.decide(0.0, probability=0.0)
    assert everything == [True, False, True]  # polarity is never served, exact always is
    assert scores.decide(1.01, probability=0.0) == [False, False, True]
    report = evaluate_pairs(pairs, LetterEmbedder())
    assert len(report["model_curve"]) == 20
    assert report["model_curve"][0]["tp"] >= report["model_curve"][-1]["tp"]


async def test_the_cache_serves_only_what_the_model_accepts(letters: LetterEmbedder) -> None:
    scope = CacheScope(tenant="acme")
    model = PairModel.load()
    refuse_all = PairVerifier.learned(PairModel.from_dict({**model.to_dict(), "threshold": 1.0}))
    cache = SemanticCache(
        embedder=letters, verifier=refuse_all, thresholds=ThresholdPolicy(default=0.5)
    )
    await cache.store(scope, "How do I reset my password?", "A")
    found = await cache.lookup(scope, "How can I reset my password please")
    assert found.kind == "miss" and found.rejected and found.rejected[0][2] == ("model",)
    assert (await cache.lookup(scope, "how do I reset my password")).kind == "exact"
