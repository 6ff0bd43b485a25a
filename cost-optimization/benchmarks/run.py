"""Budget check + settle latency: reserve and settle, one call after another, p50/p99.

Runs each configuration in this process against the real components: the in-process backend and
the Redis backend (loopback), each without a ledger (the counters alone) and with the SQLite
ledger: written before settle returns (an fsync'd commit per call), and, for Redis, deferred (the
record parked in Redis's outbox by the settle script, written to SQLite in batches by a
background task). Every reservation touches five budgets: a per-request limit and the caller's
key, user, team and org. Writes ``results/budgets.json`` and regenerates the table in the
module's README (between the ``bench:budgets`` markers).

Usage: python benchmarks/run.py [--calls N] [--warmup N] [--concurrency N] [--redis-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import inspect
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import redis
import redis.asyncio as aioredis

from genai_factory.cost.backends import BudgetBackend, InProcessBudgetBackend
from genai_factory.cost.budgets import BudgetPolicyEngine, LedgerWrite
from genai_factory.cost.ledger import SQLiteSpendLedger
from genai_factory.cost.redis_backend import RedisBudgetBackend
from genai_factory.cost.resp import RedisScript
from genai_factory.shared.models import (
    ChatCompletionRequest,
    CostRecord,
    Principal,
)

HERE = Path(__file__).resolve().parent
BUDGETS: list[dict[str, Any]] = [
    {"scope": "request", "limit_usd": "5"},
    {"scope": "key", "period": "daily", "limit_usd": "1000000"},
    {"scope": "user", "period": "daily", "limit_tokens": 10**12},
    {"scope": "team", "period": "monthly", "limit_usd": "1000000"},
    {"scope": "org", "period": "total", "limit_usd": "1000000"},
]
PRINCIPAL = Principal(subject="bench", key_id="k1", user_id="u1", team_id="t1", org_id="o1")
REQUEST = ChatCompletionRequest(
    model="bench-model", max_tokens=128, messages=[{"role": "user", "content": "hello " * 50}]
)


class RedisPyClient:
    """The backend's two client calls (``evalsha``, ``execute``) over redis-py's asyncio client:
    the same scripts through the client the backend used before resp.py, for comparison."""

    def __init__(self, url: str, timeout_s: float) -> None:
        self._redis = aioredis.Redis.from_url(
            url, decode_responses=True, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self._loaded: set[str] = set()

    async def evalsha(self, script: RedisScript, keys: list[Any], args: list[Any]) -> Any:
        if script.sha not in self._loaded:
            await self._redis.script_load(script.source)
            self._loaded.add(script.sha)
        return await self._redis.evalsha(script.sha, len(keys), *keys, *args)

    async def execute(self, *args: Any) -> Any:
        return await self._redis.execute_command(*args)

    async def close(self) -> None:
        await self._redis.aclose()


def redis_py_backend(url: str, key_prefix: str) -> RedisBudgetBackend:
    backend = RedisBudgetBackend(url, key_prefix=key_prefix)
    backend._client = RedisPyClient(url, backend.timeout_s)  # type: ignore[assignment]
    return backend


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


async def one_call(engine: BudgetPolicyEngine, i: int) -> tuple[float, float]:
    start = time.perf_counter()
    reservation = await engine.reserve(PRINCIPAL, REQUEST, Decimal("0.0030"))
    reserved = time.perf_counter()
    record = CostRecord(
        request_id=f"bench-{uuid.uuid4().hex}-{i}",
        model="bench-model",
        input_tokens=80,
        output_tokens=60,
        cost_usd=Decimal("0.0021"),
    )
    await engine.settle(reservation, record)
    settled = time.perf_counter()
    return (reserved - start) * 1000, (settled - reserved) * 1000


def redis_script_stats(url: str) -> tuple[int, int]:
    """Scripts run and microseconds spent in them by the Redis server so far (all clients)."""
    client = redis.Redis.from_url(url)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    calls = usec = 0
    for name in ("cmdstat_evalsha", "cmdstat_eval"):
        calls += int(stats.get(name, {}).get("calls", 0))
        usec += int(stats.get(name, {}).get("usec", 0))
    return calls, usec


async def measure(
    name: str,
    engine: BudgetPolicyEngine,
    calls: int,
    warmup: int,
    concurrency: int,
    redis_url: str | None,
) -> dict[str, Any]:
    for i in range(warmup):
        await one_call(engine, -i - 1)
    reserve_ms: list[float] = []
    settle_ms: list[float] = []
    redis_before = redis_script_stats(redis_url) if redis_url else None
    cpu_start = time.process_time()
    for i in range(calls):
        r, s = await one_call(engine, i)
        reserve_ms.append(r)
        settle_ms.append(s)
    # CPU this process spent per call (threads included): the work, apart from waiting
    cpu_ms = (time.process_time() - cpu_start) * 1000 / calls
    redis_server_ms: float | None = None
    if redis_url and redis_before is not None:
        after = redis_script_stats(redis_url)
        scripts = after[0] - redis_before[0]
        redis_server_ms = (after[1] - redis_before[1]) / 1000 / max(1, calls)
        assert scripts >= 2 * calls, "expected two scripts per call"
    total_ms = [r + s for r, s in zip(reserve_ms, settle_ms, strict=True)]

    # throughput with several callers at once (one event loop, like one gateway replica)
    per_task = max(1, calls // concurrency)

    async def worker(t: int) -> None:
        for j in range(per_task):
            await one_call(engine, 2 * 10**6 + t * per_task + j)

    started = time.perf_counter()
    await asyncio.gather(*(worker(t) for t in range(concurrency)))
    elapsed = time.perf_counter() - started
    result = {
        "name": name,
        "calls": calls,
        "reserve_ms": {"p50": percentile(reserve_ms, 50), "p99": percentile(reserve_ms, 99)},
        "settle_ms": {"p50": percentile(settle_ms, 50), "p99": percentile(settle_ms, 99)},
        "reserve_plus_settle_ms": {
            "p50": percentile(total_ms, 50),
            "p99": percentile(total_ms, 99),
            "mean": statistics.fmean(total_ms),
        },
        "client_cpu_ms_per_call": cpu_ms,
        "redis_server_script_ms_per_call": redis_server_ms,
        "concurrent": {
            "tasks": concurrency,
            "calls": per_task * concurrency,
            "calls_per_s": per_task * concurrency / elapsed,
        },
        "raw_reserve_plus_settle_ms": [round(v, 4) for v in total_ms],
    }
    print(
        f"  {name}: reserve+settle p50 {result['reserve_plus_settle_ms']['p50']:.3f} ms, "
        f"p99 {result['reserve_plus_settle_ms']['p99']:.3f} ms",
        flush=True,
    )
    return result


def cpu_model() -> str:
    """The CPU's model name (Linux), else what the platform module knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def versions() -> dict[str, str]:
    names = ("genai-factory-cost-optimization", "hiredis", "redis", "pydantic")
    found = {name: importlib.metadata.version(name) for name in names}
    found["python"] = platform.python_version()
    return found


async def run(args: argparse.Namespace) -> dict[str, Any]:
    load_at_start = os.getloadavg()[0]  # other work on the machine moves the tail latencies
    results: list[dict[str, Any]] = []
    prefix = f"gfbench:{uuid.uuid4().hex[:10]}:"
    with tempfile.TemporaryDirectory() as tmp:
        default_interval = (
            inspect.signature(BudgetPolicyEngine).parameters["flush_interval_s"].default
        )
        setups: list[tuple[str, str, bool, LedgerWrite, float]] = [
            ("in-process, counters only", "memory", False, "sync", default_interval),
            ("Redis (loopback), counters only", "redis", False, "sync", default_interval),
            (
                "Redis (loopback) through redis-py, counters only",
                "redis-py",
                False,
                "sync",
                default_interval,
            ),
            (
                "in-process + SQLite ledger (fsync per call)",
                "memory",
                True,
                "sync",
                default_interval,
            ),
            (
                "Redis (loopback) + SQLite ledger (fsync per call)",
                "redis",
                True,
                "sync",
                default_interval,
            ),
            (
                "Redis (loopback) + SQLite ledger (deferred: Redis outbox, batched fsync)",
                "redis",
                True,
                "deferred",
                default_interval,
            ),
            (
                "Redis (loopback) + SQLite ledger (deferred, a batch every 0.05 s)",
                "redis",
                True,
                "deferred",
                0.05,
            ),
        ]
        for n, (name, kind, with_ledger, ledger_write, interval) in enumerate(setups):
            backend: BudgetBackend
            if kind == "redis":
                backend = RedisBudgetBackend(args.redis_url, key_prefix=f"{prefix}{n}:")
            elif kind == "redis-py":
                backend = redis_py_backend(args.redis_url, f"{prefix}{n}:")
            else:
                backend = InProcessBudgetBackend()
            engine = BudgetPolicyEngine(
                budgets=BUDGETS,
                backend=backend,
                ledger=SQLiteSpendLedger(Path(tmp) / f"{n}.sqlite3") if with_ledger else None,
                record_spend=with_ledger,
                ledger_write=ledger_write,
                flush_interval_s=interval,
            )
            try:
                results.append(
                    await measure(
                        name,
                        engine,
                        args.calls,
                        args.warmup,
                        args.concurrency,
                        args.redis_url if kind.startswith("redis") else None,
                    )
                )
            finally:
                await engine.close()
    client = redis.Redis.from_url(args.redis_url)
    try:
        server = client.info("server")
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
    return {
        "benchmark": "budgets",
        "machine": {
            "platform": platform.platform(),
            "processor": cpu_model(),
            "cpu_count": os.cpu_count(),
            "redis_server": server.get("redis_version"),
            "load_average_1m": {"start": load_at_start, "end": os.getloadavg()[0]},
        },
        "versions": versions(),
        "parameters": {
            "calls": args.calls,
            "warmup": args.warmup,
            "concurrency": args.concurrency,
            "budgets_per_call": len(BUDGETS),
            "redis_url": args.redis_url,
            "event_loop": args.loop,
        },
        "results": results,
    }


def table(report: dict[str, Any]) -> str:
    lines = [
        "| configuration | reserve p50 / p99 (ms) | settle p50 / p99 (ms) | "
        "reserve + settle p50 / p99 (ms) | CPU per call: client / Redis scripts (ms) | "
        f"calls/s with {report['parameters']['concurrency']} concurrent callers |",
        "|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        server = r.get("redis_server_script_ms_per_call")
        cpu = f"{r['client_cpu_ms_per_call']:.3f} / " + ("-" if server is None else f"{server:.3f}")
        lines.append(
            f"| {r['name']} | {r['reserve_ms']['p50']:.3f} / {r['reserve_ms']['p99']:.3f} | "
            f"{r['settle_ms']['p50']:.3f} / {r['settle_ms']['p99']:.3f} | "
            f"{r['reserve_plus_settle_ms']['p50']:.3f} / {r['reserve_plus_settle_ms']['p99']:.3f} | "
            f"{cpu} | {r['concurrent']['calls_per_s']:.0f} |"
        )
    machine, versions = report["machine"], report["versions"]
    load = machine["load_average_1m"]
    lines += [
        "",
        f"Measured on {machine['platform']}, {machine['cpu_count']} CPUs "
        f"({machine['processor']}), load average {load['start']:.1f} at the start and "
        f"{load['end']:.1f} at the end (1 min), Python {versions['python']}, "
        f"hiredis {versions['hiredis']}, redis-py {versions['redis']}, "
        f"Redis {machine['redis_server']} on loopback, "
        f"SQLite on the machine's disk, {report['parameters'].get('event_loop', 'asyncio')} "
        f"event loop; {report['parameters']['calls']} calls per configuration "
        f"after {report['parameters']['warmup']} warm-up calls.",
    ]
    verdicts = []
    for r in report["results"]:
        if r["name"].startswith("Redis") and not any(
            skip in r["name"] for skip in ("fsync per call", "redis-py", "0.05 s")
        ):
            p99 = r["reserve_plus_settle_ms"]["p99"]
            verdicts.append(
                f"{r['name']}: p99 {p99:.3f} ms, {'under' if p99 < 1 else 'over'} the goal"
            )
    if verdicts:
        lines += ["", "Goal, budget check + settle under 1 ms with Redis on loopback (p99):"]
        lines += [f"- {v}" for v in verdicts]
    return "\n".join(lines)


START, END = "<!-- bench:budgets:start -->", "<!-- bench:budgets:end -->"


def update_readme(report: dict[str, Any], readme: Path) -> bool:
    """Replace the table between the markers with this run's; False when there are none."""
    text = readme.read_text(encoding="utf-8")
    head, found, rest = text.partition(START)
    _, found_end, tail = rest.partition(END)
    if not (found and found_end):
        return False
    readme.write_text(f"{head}{START}\n{table(report)}\n{END}{tail}", encoding="utf-8")
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--redis-url", default=os.environ.get("GF_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    parser.add_argument(
        "--loop",
        choices=("uvloop", "asyncio"),
        default="uvloop",
        help="event loop: uvloop, which `gf gateway serve` runs on (default), or asyncio's own",
    )
    parser.add_argument(
        "--readme-only",
        action="store_true",
        help="rewrite the README table from results/budgets.json without measuring",
    )
    args = parser.parse_args()
    out = HERE / "results" / "budgets.json"
    if args.readme_only:
        report = json.loads(out.read_text())
    else:
        print(f"budgets benchmark: {args.calls} calls per configuration", flush=True)
        if args.loop == "uvloop":
            import uvloop

            report = uvloop.run(run(args))
        else:
            report = asyncio.run(run(args))
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {out.relative_to(HERE.parent)}\n")
    print(table(report))
    readme = HERE.parent / "README.md"
    if update_readme(report, readme):
        print(f"\nupdated the table in {readme.name}")
    else:
        print(f"\n{readme.name} has no {START} marker: table not written", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
