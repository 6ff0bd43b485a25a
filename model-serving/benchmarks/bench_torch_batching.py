"""(a) Continuous batching vs transformers generate() one request at a time vs static batching.

Every system produces exactly the same number of tokens per request (mixed lengths; EOS
ignored) from the same BoolQ questions, greedy. Throughput counts only requested tokens (static
batching also computes padding steps for the shorter requests of a batch, which count as waste).

Saturation: twice as many requests as batch slots arrive at once, so finished requests' slots
are refilled at once (continuous batching) instead of idling until the batch ends (static).

Usage: python benchmarks/bench_torch_batching.py [--requests 64] [--max-batch 32] [--sequential 6]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

import torch
from bench_torch_common import (
    chat_ids,
    load_model,
    machine_info,
    markdown_table,
    percentile,
    workload,
    write_result,
)

from genai_factory.serving.torch_engine.engine import TorchEngine
from genai_factory.serving.torch_engine.sampling import SamplingParams

LENGTHS = [16, 32, 64, 48]


def hf_sequential(hf_model: Any, prompts: list[list[int]], lengths: list[int]) -> dict[str, Any]:
    start = time.perf_counter()
    latencies = []
    with torch.inference_mode():
        for prompt, length in zip(prompts, lengths, strict=True):
            began = time.perf_counter()
            hf_model.generate(
                torch.tensor([prompt]),
                max_new_tokens=length,
                min_new_tokens=length,
                do_sample=False,
                pad_token_id=2,
            )
            latencies.append(time.perf_counter() - began)
    wall = time.perf_counter() - start
    return {
        "requests": len(prompts),
        "tokens": sum(lengths),
        "wall_s": wall,
        "latencies_s": latencies,
    }


def hf_static(
    hf_model: Any, prompts: list[list[int]], lengths: list[int], batch: int
) -> dict[str, Any]:
    start = time.perf_counter()
    computed = 0
    with torch.inference_mode():
        for first in range(0, len(prompts), batch):
            group = prompts[first : first + batch]
            steps = max(lengths[first : first + batch])
            width = max(len(p) for p in group)
            ids = torch.tensor([[2] * (width - len(p)) + p for p in group])
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in group])
            hf_model.generate(
                ids,
                attention_mask=mask,
                max_new_tokens=steps,
                min_new_tokens=steps,
                do_sample=False,
                pad_token_id=2,
            )
            computed += steps * len(group)
    wall = time.perf_counter() - start
    return {
        "requests": len(prompts),
        "batch_size": batch,
        "tokens": sum(lengths),
        "computed_tokens": computed,
        "wall_s": wall,
    }


async def ours(
    engine: TorchEngine, prompts: list[list[int]], lengths: list[int], together: bool
) -> dict[str, Any]:
    ttfts: list[float] = []
    latencies: list[float] = []

    async def one(prompt: list[int], length: int) -> int:
        params = SamplingParams(temperature=0.0, max_tokens=length, ignore_eos=True)
        began = time.perf_counter()
        count = 0
        async for event in engine.stream(prompt, params):
            if count == 0 and event.token_ids:
                ttfts.append(time.perf_counter() - began)
            count += len(event.token_ids)
        latencies.append(time.perf_counter() - began)
        return count

    await engine.start()
    before = engine.stats()
    start = time.perf_counter()
    if together:
        counts = await asyncio.gather(*(one(p, n) for p, n in zip(prompts, lengths, strict=True)))
    else:
        counts = [await one(p, n) for p, n in zip(prompts, lengths, strict=True)]
    wall = time.perf_counter() - start
    after = engine.stats()
    assert sum(counts) == sum(lengths), (sum(counts), sum(lengths))
    return {
        "requests": len(prompts),
        "tokens": sum(counts),
        "wall_s": wall,
        "steps": after.steps - before.steps,
        "max_running": after.max_running,
        "ttft_p50_s": percentile(ttfts, 50),
        "ttft_p95_s": percentile(ttfts, 95),
        "latency_p50_s": percentile(latencies, 50),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--max-batch", type=int, default=32, help="the engine's batch slots")
    parser.add_argument("--sequential", type=int, default=6, help="requests run one at a time")
    parser.add_argument("--static", type=int, default=32, help="requests run in static batches")
    parser.add_argument("--static-batch", type=int, default=16)
    args = parser.parse_args()

    hf_model, tokenizer, paged = load_model()
    rows, source = workload(args.requests)
    prompts = [chat_ids(tokenizer, row["question"].capitalize() + "?") for row in rows]
    lengths = [LENGTHS[i % len(LENGTHS)] for i in range(len(prompts))]
    engine = TorchEngine.from_model(
        paged, tokenizer, max_batch_size=args.max_batch, kv_cache_mb=256, threads=None
    )
    machine = machine_info()

    print("transformers, one request at a time ...", flush=True)
    sequential = hf_sequential(hf_model, prompts[: args.sequential], lengths[: args.sequential])
    print("transformers, static batches ...", flush=True)
    static = hf_static(hf_model, prompts[: args.static], lengths[: args.static], args.static_batch)
    print("torch engine, one request at a time ...", flush=True)
    ours_sequential = asyncio.run(
        ours(engine, prompts[: args.sequential], lengths[: args.sequential], together=False)
    )
    print("torch engine, continuous batching (all at once) ...", flush=True)
    continuous = asyncio.run(ours(engine, prompts, lengths, together=True))
    asyncio.run(engine.close())
    machine["load_average_1m_end"] = machine_info()["load_average_1m"]

    def rate(run: dict[str, Any]) -> float:
        return float(run["tokens"] / run["wall_s"])

    baseline = rate(sequential)
    table_rows = [
        [
            "transformers generate, one at a time",
            sequential["requests"],
            f"{rate(sequential):.1f}",
            "1.0x",
        ],
        [
            f"transformers generate, static batches of {args.static_batch}",
            static["requests"],
            f"{rate(static):.1f}",
            f"{rate(static) / baseline:.1f}x",
        ],
        [
            "torch engine, one at a time",
            ours_sequential["requests"],
            f"{rate(ours_sequential):.1f}",
            f"{rate(ours_sequential) / baseline:.1f}x",
        ],
        [
            "torch engine, continuous batching",
            continuous["requests"],
            f"{rate(continuous):.1f}",
            f"{rate(continuous) / baseline:.1f}x",
        ],
    ]
    table = markdown_table(["system", "requests", "output tokens/s", "vs sequential"], table_rows)
    payload = {
        "benchmark": "torch_batching",
        "machine": machine,
        "workload": source,
        "parameters": vars(args) | {"output_lengths_cycle": LENGTHS, "greedy": True},
        "transformers_sequential": sequential,
        "transformers_static": static,
        "engine_sequential": ours_sequential,
        "engine_continuous": continuous,
        "speedup_continuous_vs_sequential": rate(continuous) / baseline,
        "goal": ">= 5x sequential throughput at saturation",
        "table": table,
    }
    write_result("torch_batching", payload)
    print(table)
    print(
        f"continuous batching TTFT p50 {continuous['ttft_p50_s']:.2f} s, p95 "
        f"{continuous['ttft_p95_s']:.2f} s; {continuous['steps']} steps for "
        f"{continuous['tokens']} tokens"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
