"""(b) Prefix caching: time to first token on a shared long system prompt, with and without.

Part 1 (hits): one long system prompt (BoolQ passages) and different questions, one request at a
time, as a chat application sends them; TTFT of every request after the first, caching on vs
off. Part 2 (cost when nothing is shared): requests with different system prompts, all at once,
caching on vs off: output throughput (noisy on a shared machine) and, precisely, the time spent
in the block manager (hashing full blocks and looking prefixes up is all that caching adds when
nothing hits), as a share of the wall time.

Usage: python benchmarks/bench_torch_prefix_cache.py [--questions 8] [--unshared 12]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from bench_torch_common import (
    chat_ids,
    load_model,
    machine_info,
    markdown_table,
    workload,
    write_result,
)

from genai_factory.serving.torch_engine.core import EngineConfig, EngineCore, GenerationRequest
from genai_factory.serving.torch_engine.engine import TorchEngine
from genai_factory.serving.torch_engine.model import PagedLlama
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


BOOKKEEPING = (
    "allocate",
    "can_allocate",
    "cached_prefix_blocks",
    "mark_computed",
    "append_tokens",
    "reserve",
    "can_reserve",
    "free",
)


def unshared_run(
    paged: PagedLlama, prompts: list[list[int]], tokens: int, caching: bool
) -> dict[str, float]:
    """All prompts at once through the scheduler; wall time and time spent in the block manager."""
    core = EngineCore(
        paged, EngineConfig(num_blocks=512, enable_prefix_caching=caching), eos_token_ids={2}
    )
    spent = [0.0]
    depth = [0]  # block-manager methods call each other: time the outermost call only

    def timed(method: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            depth[0] += 1
            began = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                depth[0] -= 1
                if depth[0] == 0:
                    spent[0] += time.perf_counter() - began

        return wrapper

    for name in BOOKKEEPING:
        setattr(core.blocks, name, timed(getattr(core.blocks, name)))
    params = SamplingParams(temperature=0.0, max_tokens=tokens, ignore_eos=True)
    start = time.perf_counter()
    for index, prompt in enumerate(prompts):
        core.add_request(GenerationRequest(f"u{index}", tuple(prompt), params))
    generated = 0
    while core.has_work():
        for event in core.step():
            generated += len(event.token_ids)
            assert event.cached_tokens == 0, "unshared prompts hit the cache"
    wall = time.perf_counter() - start
    return {"tokens_per_s": generated / wall, "wall_s": wall, "bookkeeping_s": spent[0]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--questions", type=int, default=8)
    parser.add_argument("--unshared", type=int, default=12)
    parser.add_argument("--unshared-tokens", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=4)
    args = parser.parse_args()

    _, tokenizer, paged = load_model()
    rows, source = workload(200)
    system = "Answer questions about this text.\n\n" + "\n\n".join(r["passage"] for r in rows[:3])
    shared = [
        chat_ids(tokenizer, row["question"].capitalize() + "?", system)
        for row in rows[: args.questions]
    ]
    # BoolQ asks several questions about one passage: keep one row per passage, so nothing is
    # shared beyond the chat template's first few tokens
    distinct = {row["passage"][:200]: row for row in rows[3:]}
    unshared = [
        chat_ids(tokenizer, row["question"].capitalize() + "?", row["passage"][:600])
        for row in list(distinct.values())[: args.unshared]
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
        return out

    print("running ...", flush=True)
    measured = asyncio.run(run_all())
    unshared_runs: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    for _ in range(args.repeats):  # alternate, so drifting machine load hits both alike
        for caching in (False, True):
            unshared_runs[caching].append(
                unshared_run(paged, unshared, args.unshared_tokens, caching)
            )
    measured["unshared"] = {str(k): v for k, v in unshared_runs.items()}
    machine["load_average_1m_end"] = machine_info()["load_average_1m"]
    off = measured["shared_caching_False"]["ttft_s"][1:]
    on = measured["shared_caching_True"]["ttft_s"][1:]
    hits = measured["shared_caching_True"]["cached_tokens"][1:]
    off_median, on_median = statistics.median(off), statistics.median(on)
    rate_off = statistics.median(r["tokens_per_s"] for r in unshared_runs[False])
    rate_on = statistics.median(r["tokens_per_s"] for r in unshared_runs[True])
    spread = [round(r["tokens_per_s"], 1) for r in unshared_runs[False] + unshared_runs[True]]

    def share(caching: bool) -> float:
        runs = unshared_runs[caching]
        return sum(r["bookkeeping_s"] for r in runs) / sum(r["wall_s"] for r in runs)

    # what caching adds to the scheduler's own work, as a share of the wall time
    cost = share(True) - share(False)
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
                f"{(rate_on / rate_off - 1) * 100:+.1f}% (run-to-run noise: {min(spread)}-{max(spread)})",
            ],
            [
                "block-manager time, share of wall time (unshared)",
                f"{share(False) * 100:.3f}%",
                f"{share(True) * 100:.3f}%",
                f"{cost * 100:+.3f}% cost",
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
        "unshared_bookkeeping_cost_share": cost,
        "unshared_tokens_per_s_median": {"off": rate_off, "on": rate_on},
        "goal": "3x lower TTFT on hits; < 2% throughput cost unshared",
        "table": table,
    }
    write_result("torch_prefix_cache", payload)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
