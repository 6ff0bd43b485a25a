"""Three real gateways share one Redis budget and race for it: the overshoot stays within one call.

Each gateway is ``gf gateway serve --config tests/budget_race/gateway.yaml`` in its own process,
with cost-optimization's ``BudgetPolicyEngine`` plugged in by config (Redis counters under this
test's namespace, one SQLite ledger file). A tiny OpenAI-wire upstream in this test answers every
call after a short delay (so reservations overlap) with a random completion length, so calls cost
different amounts. The test fires concurrent requests through all three gateways at once, stops
them gracefully and checks the books:

- the spend recorded (ledger and Redis counter, which must agree) is at most the limit plus one
  call's cost (the issue's promise);
- the admitted calls' costs, computed from the usage each client received, add up to exactly the
  recorded spend, one ledger record per admitted call;
- every other call got the documented 429 with the OpenAI-shaped ``budget_exceeded`` error.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

CONFIG = Path(__file__).with_name("budget_race") / "gateway.yaml"
GF = Path(sys.executable).with_name("gf")
API_KEY = "sk-race-0123456789abcdef"
WARMUP_KEY = "sk-warmup-0123456789abcdef"  # another team: its own budget counter
LIMIT = Decimal("0.5")
PROMPT_TOKENS = 8  # what the upstream reports for every call
MAX_TOKENS = 6  # the clients' max_tokens; the upstream answers 1..MAX_TOKENS tokens
USD_PER_PROMPT_TOKEN = Decimal("0.001")  # tests/budget_race/gateway.yaml's prices
USD_PER_COMPLETION_TOKEN = Decimal("0.002")
ONE_CALL_MAX = PROMPT_TOKENS * USD_PER_PROMPT_TOKEN + MAX_TOKENS * USD_PER_COMPLETION_TOKEN
GATEWAYS = 3
CALLS_PER_WAVE = 3  # per gateway
MAX_WAVES = 30


class _Upstream(BaseHTTPRequestHandler):
    """``POST /v1/chat/completions``: a short answer after a short delay, with its usage."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", "0"))))
        time.sleep(random.uniform(0.01, 0.05))  # the "model": calls from all gateways overlap
        completion = random.randint(1, int(body.get("max_tokens") or MAX_TOKENS))
        answer = json.dumps(
            {
                "id": f"chatcmpl-{random.getrandbits(64):x}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model", "race-model"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "ok " * completion},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": PROMPT_TOKENS,
                    "completion_tokens": completion,
                    "total_tokens": PROMPT_TOKENS + completion,
                },
            }
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        return None  # keep the test output quiet


@pytest.fixture
def upstream() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Gateways:
    """The started gateway processes: their URLs, and a graceful stop."""

    def __init__(self) -> None:
        self.processes: list[tuple[subprocess.Popen[bytes], Path]] = []
        self.urls: list[str] = []

    def stop(self) -> None:
        """SIGTERM: each gateway drains and closes the budget engine (and its ledger)."""
        for process, _ in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process, log in self.processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pytest.fail(f"a gateway did not stop on SIGTERM:\n{log.read_text()[-3000:]}")

    def kill(self) -> None:
        for process, _ in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)


@pytest.fixture
def gateways(
    upstream: str, redis_url: str, redis_namespace: str, tmp_path: Path
) -> Iterator[Gateways]:
    """Three ``gf gateway serve`` processes on one config, all ready."""
    env = os.environ | {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "GF_RACE_UPSTREAM": upstream,
        "GF_RACE_API_KEY": API_KEY,
        "GF_RACE_WARMUP_KEY": WARMUP_KEY,
        "GF_RACE_LIMIT_USD": str(LIMIT),
        "GF_RACE_REDIS_URL": redis_url,
        "GF_RACE_PREFIX": redis_namespace,
        "GF_RACE_LEDGER": str(tmp_path / "ledger.sqlite3"),
    }
    env.pop("GF_MASTER_KEY", None)
    started = Gateways()
    try:
        for i in range(GATEWAYS):
            port = _free_port()
            log = tmp_path / f"gateway-{i}.log"
            with log.open("wb") as out:
                process = subprocess.Popen(
                    [str(GF), "gateway", "serve", "--config", str(CONFIG), "--port", str(port)],
                    cwd=tmp_path,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            started.processes.append((process, log))
            started.urls.append(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 90
        for (process, log), url in zip(started.processes, started.urls, strict=True):
            while True:
                if process.poll() is not None:
                    pytest.fail(f"a gateway exited at start:\n{log.read_text()[-3000:]}")
                try:
                    if httpx.get(f"{url}/health/readiness", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"a gateway was not ready in 90 s:\n{log.read_text()[-3000:]}")
                time.sleep(0.2)
        yield started
    finally:
        started.kill()  # never leave a process behind, whatever happened


async def _fire(urls: list[str]) -> list[tuple[int, int, dict[str, Any]]]:
    """Waves of concurrent calls through every gateway until a whole wave is refused.

    Returns (gateway index, status, JSON body) per call. Waves, rather than one burst, give every
    gateway a fair share of the race even if one of them warms up faster.
    """
    limits = httpx.Limits(max_connections=GATEWAYS * CALLS_PER_WAVE)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def one(g: int, i: int, key: str = API_KEY) -> tuple[int, int, dict[str, Any]]:
            reply = await client.post(
                f"{urls[g]}/v1/chat/completions",
                headers={"authorization": f"Bearer {key}"},
                json={
                    "model": "race-model",
                    "max_tokens": MAX_TOKENS,
                    # distinct prompts: no layer may answer one call from another
                    "messages": [{"role": "user", "content": f"race call {i}: say ok"}],
                },
            )
            return g, reply.status_code, reply.json()

        # one call per gateway on another team's budget first: every gateway is warm (scripts
        # loaded, counters seeded, connections open) when the race starts
        for g in range(GATEWAYS):
            _, status, body = await one(g, -1 - g, WARMUP_KEY)
            assert status == 200, body
        results: list[tuple[int, int, dict[str, Any]]] = []
        for wave in range(MAX_WAVES):
            calls = [
                one(g, (wave * CALLS_PER_WAVE + i) * GATEWAYS + g)
                for i in range(CALLS_PER_WAVE)
                for g in range(GATEWAYS)
            ]
            batch = await asyncio.gather(*calls)
            results += batch
            if all(status != 200 for _, status, _ in batch):
                return results
        raise AssertionError(f"the budget was not used up after {MAX_WAVES} waves")


def _ledger(path: Path) -> tuple[Decimal, int, int]:
    """The ledger's team spend and records, and how many records it holds in all."""
    from genai_factory.cost.ledger import SQLiteSpendLedger  # the module's own reader

    async def read() -> tuple[Decimal, int, int]:
        ledger = SQLiteSpendLedger(path)
        try:
            usage = await ledger.usage("team:race-team", None, None)
            return usage.cost_usd, usage.records, len(await ledger.records(limit=10_000))
        finally:
            await ledger.close()

    return asyncio.run(read())


def test_three_gateways_racing_one_redis_budget_overshoot_at_most_one_call(
    gateways: Gateways, redis_url: str, redis_namespace: str, tmp_path: Path
) -> None:
    results = asyncio.run(_fire(gateways.urls))
    gateways.stop()  # graceful: the books are read once every gateway has closed its engine
    admitted = [body for _, status, body in results if status == 200]
    rejected = [(status, body) for _, status, body in results if status != 200]

    # the documented refusal: 429, OpenAI-shaped error, code budget_exceeded, nothing else
    assert rejected, "the budget never ran out: the test proved nothing"
    for status, body in rejected:
        assert status == 429, body
        assert body["error"]["code"] == "budget_exceeded", body
        assert body["error"]["type"], body
        assert "team-total-usd" in body["error"]["message"], body
    # the calls really competed: every gateway got some of the budget
    per_gateway = [
        sum(1 for g, status, _ in results if g == gateway and status == 200)
        for gateway in range(GATEWAYS)
    ]
    assert all(per_gateway), per_gateway

    admitted_usd = sum(
        (
            body["usage"]["prompt_tokens"] * USD_PER_PROMPT_TOKEN
            + body["usage"]["completion_tokens"] * USD_PER_COMPLETION_TOKEN
            for body in admitted
        ),
        Decimal(0),
    )
    client = redis.Redis.from_url(redis_url)
    try:
        pattern = f"{redis_namespace}c:team-total-usd|team:race-team|total"
        counters = list(client.scan_iter(match=pattern))
        assert len(counters) == 1
        counter_usd = Decimal(int(client.get(counters[0]) or 0)) / Decimal(10**9)
        assert client.zcard(f"{redis_namespace}exp") == 0  # no hold left behind
        assert client.hlen(f"{redis_namespace}outbox") == 0  # every record reached the ledger
    finally:
        client.close()
    ledger_usd, team_records, all_records = _ledger(tmp_path / "ledger.sqlite3")

    assert ledger_usd <= LIMIT + ONE_CALL_MAX  # the promise: overshoot at most one call
    # and the budget really was used up: a call is refused once its estimate (the gateway's
    # prompt estimate plus max_tokens, priced) no longer fits, and that is under two calls' cost
    assert ledger_usd > LIMIT - 2 * ONE_CALL_MAX
    assert ledger_usd == admitted_usd  # what the clients were served is what was recorded
    assert counter_usd == ledger_usd  # the shared counter agrees with the ledger
    assert team_records == len(admitted)  # one record per admitted call
    assert all_records == len(admitted) + GATEWAYS  # and the warm-up calls, nothing else
