"""`make demo`, run as a user would: model serving, the gateway with every module, the tour."""

from __future__ import annotations

import os
import re
import signal
import subprocess

import httpx
import pytest
import yaml

from .conftest import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def tour() -> str:
    """The demo's output, after it ran the whole tour and stopped (GF_DEMO_EXIT=1)."""
    env = os.environ | {"GF_DEMO_EXIT": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    # its own process group: a timeout stops the servers the script started, not just bash
    demo = subprocess.Popen(
        ["bash", "scripts/demo.sh"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = demo.communicate(timeout=170)
    except subprocess.TimeoutExpired:
        os.killpg(demo.pid, signal.SIGTERM)
        try:
            output, _ = demo.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(demo.pid, signal.SIGKILL)
            output, _ = demo.communicate()
        pytest.fail("the demo did not finish within 170 s:\n" + output[-4000:])
    assert demo.returncode == 0, output[-4000:]
    return output


def test_the_model_answers_plainly_and_streamed(tour: str) -> None:
    answer = re.search(r"== 1\..*?\n   A: (['\"])(.+?)\1\n   HTTP 200", tour, re.S)
    assert answer is not None and answer.group(2).strip(), tour
    assert "ok: HTTP 200 with the model's answer" in tour
    assert re.search(r"HTTP 200 · first token after \d+ ms · \d+ chunks · \[DONE\]", tour)


def test_the_cache_answers_the_repeat(tour: str) -> None:
    assert "same question: x-gf-cache: hit (exact)" in tour
    assert "ok: x-gf-cache: hit, no model call" in tour


def test_guards_redact_and_block_when_configured(tour: str) -> None:
    config = yaml.safe_load((ROOT / "demo/platform.yaml").read_text())
    if not config.get("guards"):
        assert tour.count("skipped: no guards are configured") == 2
        return
    assert "PIIGuard (input): redact · rules: pii.email" in tour
    assert "HTTP 400" in tour and "error: content_blocked" in tour
    assert "InjectionGuard (input): block" in tour


def test_rate_limit_and_budget_answer_429(tour: str) -> None:
    assert re.search(r"HTTP 429 · \d+ ms · Retry-After: \d+ · error: rate_limit_exceeded", tour)
    assert re.search(r"-> HTTP 429 .*budget_exceeded", tour)
    assert "ok: HTTP 429 budget_exceeded" in tour


def test_every_request_has_a_stored_trace_and_a_cost(tour: str) -> None:
    assert "ok: a stored trace for every request" in tour
    traced = re.findall(
        r"^   .+? (\d{3})  [0-9a-f]{32}  chat smollm2, .* cost \$\d\.\d{6}", tour, re.M
    )
    assert len(traced) >= 15 and {"200", "429"} <= set(traced)
    assert re.search(r"cost by team \(console /api/cost\): platform: \$0\.0000\d\d", tour)
    assert re.search(r"gateway usage \(GET /admin/usage\): \d+ answered", tour)
    assert "tour finished: every step showed what it should" in tour


def test_it_prints_the_console_and_leaves_nothing_running(tour: str) -> None:
    console = re.search(
        r"the console \(observability\): (http://127\.0\.0\.1:\d+)/console/#token=\S+", tour
    )
    assert console is not None
    with pytest.raises(httpx.ConnectError):  # the gateway stopped with the demo
        httpx.get(console.group(1) + "/health/liveness", timeout=2)
