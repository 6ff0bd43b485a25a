"""``gf cache eval`` on labelled pairs; malformed input is a clear one-line error, exit code 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from genai_factory.cache import embedding
from genai_factory.cache.cli import cache
from genai_factory.cache.embedding import MiniLMEmbedder
from genai_factory.cache.pairs import evaluate_pairs, parse_pairs, score

PAIRS = [
    {"a": "How do I reset my password?", "b": "How can I reset my password", "label": True},
    {"a": "How do I enable dark mode?", "b": "How do I disable dark mode?", "label": False},
    {"a": "Weather in Paris today", "b": "Weather in Paris today", "label": True},
    {
        "a": "What is our refund policy?",
        "b": "What is our refund policy?",
        "label": False,
        "scope_a": {"tenant": "acme"},
        "scope_b": {"tenant": "globex"},
    },
]


@pytest.fixture(autouse=True)
def shared_model(embedder: MiniLMEmbedder, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI builds its embedder; hand it the session's so ONNX loads once per run."""
    monkeypatch.setattr(embedding, "MiniLMEmbedder", lambda: embedder)


def write_pairs(path: Path, rows: list[object]) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_eval_prints_scores_and_a_curve(tmp_path: Path) -> None:
    pairs = write_pairs(tmp_path / "pairs.jsonl", list(PAIRS))
    result = CliRunner().invoke(cache, ["eval", "--pairs", str(pairs)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["pairs"] == 4 and report["positives"] == 2
    assert report["default"]["precision"] == 1.0 and report["default"]["recall"] == 1.0
    assert report["without_verifier"]["fp"] == 1  # dark mode on/off
    assert len(report["curve"]) == 30 and {"threshold", "precision", "recall"} <= set(
        report["curve"][0]
    )
    loose = CliRunner().invoke(cache, ["eval", "--pairs", str(pairs), "--no-verify"])
    assert json.loads(loose.output)["default"]["fp"] == 1


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not valid JSON"),
        ('["a", "b"]', "must be a JSON object"),
        ('{"a": "x", "b": "", "label": true}', "non-empty strings"),
        ('{"a": "x", "b": "y", "label": "yes"}', "'label' must be true or false"),
        ('{"a": "x", "b": "y", "label": true, "scope_a": {"colour": "red"}}', "unknown fields"),
        ('{"a": "x", "b": "y", "label": true, "scope_b": 5}', "object of strings"),
    ],
)
def test_a_malformed_line_names_itself_and_exits_2(tmp_path: Path, line: str, message: str) -> None:
    pairs = write_pairs(tmp_path / "bad.jsonl", [PAIRS[0], line])
    result = CliRunner().invoke(cache, ["eval", "--pairs", str(pairs)])
    assert result.exit_code == 2
    assert "bad.jsonl:2: " in result.output and message in result.output
    assert "Traceback" not in result.output


def test_missing_and_empty_files_are_input_errors(tmp_path: Path) -> None:
    missing = CliRunner().invoke(cache, ["eval", "--pairs", str(tmp_path / "nope.jsonl")])
    assert missing.exit_code == 2 and "cannot read" in missing.output
    empty = write_pairs(tmp_path / "empty.jsonl", [""])
    result = CliRunner().invoke(cache, ["eval", "--pairs", str(empty)])
    assert result.exit_code == 2 and "no pairs found" in result.output


@pytest.mark.e2e
def test_gf_cache_eval_through_the_installed_entry_point(tmp_path: Path) -> None:
    pairs = write_pairs(tmp_path / "bad.jsonl", [PAIRS[0], '{"a": 1}'])
    gf = Path(sys.executable).parent / "gf"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run(
        [str(gf), "cache", "eval", "--pairs", str(pairs)], capture_output=True, text=True, env=env
    )
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: {pairs}:2: 'a' and 'b' must be non-empty strings"


def test_prewarm_command_loads_a_log_into_l3(tmp_path: Path) -> None:
    log = write_pairs(
        tmp_path / "log.jsonl",
        [{"tenant": "acme", "prompt": "What are your opening hours?", "response": "9-5"}],
    )
    config = tmp_path / "cache.yaml"
    db = tmp_path / "l3.db"
    config.write_text(
        "cache:\n  type: genai_factory.cache.core:SemanticCache\n  params:\n"
        "    semantic: false\n"
        f"    l3: {{type: genai_factory.cache.tiers.sql:SQLiteStore, params: {{path: '{db}'}}}}\n"
    )
    result = CliRunner().invoke(cache, ["prewarm", "--log", str(log), "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"loaded": 1}
    bad = write_pairs(tmp_path / "bad.jsonl", [{"tenant": "acme"}])
    failed = CliRunner().invoke(cache, ["prewarm", "--log", str(bad), "--config", str(config)])
    assert failed.exit_code == 2 and "bad.jsonl:1" in failed.output


def test_scores_and_the_curve_from_the_library(embedder: MiniLMEmbedder) -> None:
    pairs = parse_pairs([json.dumps(p) for p in PAIRS], source="inline")
    report = evaluate_pairs(pairs, embedder, threshold=0.9, curve=[0.5, 0.99])
    assert report["default"]["threshold"] == 0.9 and [c["threshold"] for c in report["curve"]] == [
        0.5,
        0.99,
    ]
    assert score([], [])["hit_rate"] == 0.0
    assert score([False], [True]) == {
        "precision": 1.0,
        "recall": 0.0,
        "f1": 0.0,
        "hit_rate": 0.0,
        "tp": 0,
        "fp": 0,
        "fn": 1,
        "tn": 0,
    }
