"""(b) Prefix caching: time to first token on a shared long system prompt, with and without.

Part 1 (hits): one long system prompt (BoolQ passages) and different questions, one request at a
time, as a chat application sends them; TTFT of every request after the first, caching on vs
off. Part 2 (cost when nothing is shared): requests with different system prompts, all at once;
output throughput with caching on vs off (the bookkeeping of hashing full blocks is the cost).

Usage: python benchmarks/bench_torch_prefix_cache.py [--questions 8] [--unshared 12]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from typing import Any

from bench_torch_common import (
    chat_ids,
    load_model,
    machine_info,
    markdown_table,
    workload,
    write_result,
)

from genai_factory.serving.torch_engine.engine import TorchEngine
from genai_factory.serving.torch_engine.sampling import SamplingParams


async def ttft(engine: TorchEngine, prompt: list[int], max_tokens: int) -> tuple[float, int]:
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens)
    began = time.perf_counter()
    first = None
    cached = 0
    async for event in engine.stream(prompt, params):
        if first is None:
            first = time.perf_counter() - began
            cached = event.cached_tokens
    assert first is not None
    return first, cached


async def shared_prefix_run(engine: TorchEngine, prompts: list[list[int]]) -> dict[str, Any]:
    times, cached = [], []
    for prompt in prompts:
        seconds, hit = await ttft(engine, prompt, max_tokens=4)
        times.append(seconds)
        cached.append(hit)
    return {"ttft_s": times, "cached_tokens": cached}


async def unshared_run(engine: TorchEngine, prompts: list[list[int]], tokens: int) -> float:
    params = SamplingParams(temperature=0.0, max_tokens=tokens, ignore_eos=True)
    start = time.perf_counter()
    results = await asyncio.gather(*(engine.generate(p, params) for p in prompts))
    wall = time.perf_counter() - start
    return sum(len(r.token_ids) for r in results) / wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--questions", type=int, default=8)
    parser.add_argument("--unshared", type=int, default=12)
    parser.add_argument("--unshared-tokens", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    _, tokenizer, paged = load_model()
    rows, source = workload(max(args.questions, args.unshared) + 3)
    system = "Answer questions about this text.\n\n" + "\n\n".join(r["passage"] for r in rows[:3])
    shared = [
        chat_ids(tokenizer, row["question"].capitalize() + "?", system)
        for row in rows[: args.questions]
    ]
    unshared = [
        chat_ids(tokenizer, row["question"].capitalize() + "?", row["passage"][:600])
        for row in rows[3 : 3 + args.unshared]
    ]
    machine = machine_info()

    def engine(caching: bool) -> TorchEngine:
        return TorchEngine.from_model(
            paged, tokenizer, enable_prefix_caching=caching, kv_cache_mb=256, threads=None
        )

    async def run_all() -> dict[str, Any]:
        out: dict[str, Any] = {}
        for caching in (False, True):
            eng = engine(caching)
            out[f"shared_caching_{caching}"] = await shared_prefix_run(eng, shared)
            await eng.close()
        throughput: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.repeats):  # alternate, so drifting machine load hits both alike
            for caching in (False, True):
                eng = engine(caching)
                throughput[caching].append(await unshared_run(eng, unshared, args.unshared_tokens))
                await eng.close()
        out["unshared_tokens_per_s"] = {str(k): v for k, v in throughput.items()}
        return out

    print("running ...", flush=True)
    measured = asyncio.run(run_all())
    machine["load_average_1m_end"] = machine_info()["load_average_1m"]
    off = measured["shared_caching_False"]["ttft_s"][1:]
    on = measured["shared_caching_True"]["ttft_s"][1:]
    hits = measured["shared_caching_True"]["cached_tokens"][1:]
    off_median, on_median = statistics.median(off), statistics.median(on)
    rate_off = statistics.median(measured["unshared_tokens_per_s"]["False"])
    rate_on = statistics.median(measured["unshared_tokens_per_s"]["True"])
    cost = (rate_off - rate_on) / rate_off
    table = markdown_table(
        ["measure", "caching off", "caching on", "ratio"],
        [
            [
                f"TTFT, shared {len(shared[0])}-token prompt (median of {len(on)})",
                f"{off_median * 1000:.0f} ms",
                f"{on_median * 1000:.0f} ms",
                f"{off_median / on_median:.1f}x lower",
            ],
            [
                f"output tokens/s, {len(unshared)} unshared prompts (median of {args.repeats})",
                f"{rate_off:.1f}",
                f"{rate_on:.1f}",
                f"{cost * 100:+.1f}% cost",
            ],
        ],
    )
    payload = {
        "benchmark": "torch_prefix_cache",
        "machine": machine,
        "workload": source,
        "parameters": vars(args) | {"shared_prompt_tokens": len(shared[0])},
        "measured": measured,
        "ttft_median_off_s": off_median,
        "ttft_median_on_s": on_median,
        "ttft_speedup": off_median / on_median,
        "cached_tokens_on_hits": hits,
        "unshared_throughput_cost": cost,
        "goal": "3x lower TTFT on hits; < 2% throughput cost unshared",
        "table": table,
    }
    write_result("torch_prefix_cache", payload)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
