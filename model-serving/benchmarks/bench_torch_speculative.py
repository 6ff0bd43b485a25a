"""(c) Speculative decoding on an input-grounded task: at low load, and across load.

Task: summarise a BoolQ passage ("Summarise this passage in two or three sentences."), so the
answer reuses phrases of its input: the case prompt lookup is made for. Greedy, up to
``--max-tokens`` tokens (the model's own EOS ends a summary); every mode must produce exactly
the same tokens as plain decoding at the same load, and the script fails (exit 1) if not.

The same ``--requests`` passages are served at every load level, so levels differ only in
how many requests run at once.

1. Across load: continuous batching with at most C requests running (C in ``--levels``; a
   closed loop: a finished request's slot goes to the next waiting one); the highest level
   runs every request at once (saturation of this request set). At each level plain decoding
   and prompt lookup (n-gram, fixed draft length) serve the same requests. Reported: output
   tokens/s end to end (prompt processing included: summarising is prompt-heavy), the same per
   CPU-second of this process (other jobs on a shared machine disturb it less), time per
   output token (TPOT) mean/p50/p99 per request, acceptance, and where speculation stops
   paying: the level from which its tokens/s stays below ``1 + --margin`` times plain's (within
   run-to-run noise, no gain) at every higher level measured.
2. Low load (one request at a time; level 1 above gives plain and prompt lookup): prompt lookup
   with the adaptive draft length, the self-speculative draft model (the first
   ``--draft-layers`` layers of the same weights) with a fixed draft length, and the same draft
   model with the adaptive draft length (it stops drafting when acceptance cannot pay for the
   draft passes, and only probes now and then).

Usage: python benchmarks/bench_torch_speculative.py [--requests 8] [--max-tokens 64]
       [--levels 1,2,4,8] [--ngram-tokens 4] [--draft-layers 26] [--draft-tokens 2]
       [--margin 0.05]
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from bench_torch_common import (
    chat_ids,
    load_model,
    machine_info,
    markdown_table,
    percentile,
    workload,
    write_result,
)

from genai_factory.serving.torch_engine.core import EngineConfig, EngineCore, GenerationRequest
from genai_factory.serving.torch_engine.model import PagedLlama
from genai_factory.serving.torch_engine.sampling import SamplingParams
from genai_factory.serving.torch_engine.speculative import SpeculativeConfig

TASK = "Summarise this passage in two or three sentences.\n\n"
BLOCK_SIZE = 16
PLAIN = "plain decoding"


def run(
    paged: PagedLlama,
    prompts: list[list[int]],
    max_tokens: int,
    speculative: SpeculativeConfig | None,
    concurrency: int,
) -> dict[str, Any]:
    """Serve ``prompts`` with at most ``concurrency`` running at once; timings per request."""
    longest = max(len(p) for p in prompts) + max_tokens + 8
    slots = min(concurrency, len(prompts))
    num_blocks = slots * -(-longest // BLOCK_SIZE) + 8
    config = EngineConfig(
        block_size=BLOCK_SIZE,
        num_blocks=num_blocks,
        max_batch_size=concurrency,
        speculative=speculative,
    )
    core = EngineCore(paged, config, eos_token_ids={2})
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens)
    outputs: dict[str, list[int]] = {}
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    start = time.perf_counter()
    cpu_start = time.process_time()
    for index, prompt in enumerate(prompts):  # the engine admits at most `concurrency`
        core.add_request(GenerationRequest(f"r{index}", tuple(prompt), params))
        outputs[f"r{index}"] = []
    while core.has_work():
        events = core.step()
        now = time.perf_counter()
        for event in events:
            if event.token_ids:
                first.setdefault(event.request_id, now)
                last[event.request_id] = now
                outputs[event.request_id].extend(event.token_ids)
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    stats = core.stats
    generated = sum(len(t) for t in outputs.values())
    # time per output token of one request: from its first token to its last
    tpot = [
        (last[name] - first[name]) / (len(tokens) - 1)
        for name, tokens in outputs.items()
        if len(tokens) > 1
    ]
    return {
        "concurrency": concurrency,
        "requests": len(prompts),
        "wall_s": wall,
        "cpu_s": cpu,
        "tokens": generated,
        "tokens_per_s": generated / wall,
        "tokens_per_cpu_s": generated / cpu if cpu > 0 else float("nan"),
        "tpot_mean_ms": sum(tpot) / len(tpot) * 1000 if tpot else float("nan"),
        "tpot_p50_ms": percentile(tpot, 50) * 1000,
        "tpot_p99_ms": percentile(tpot, 99) * 1000,
        "steps": stats.steps,
        "tokens_per_step": generated / max(1, stats.steps),
        "max_running": stats.max_running,
        "draft_tokens": stats.draft_tokens,
        "accepted_draft_tokens": stats.accepted_draft_tokens,
        "acceptance_rate": stats.acceptance_rate,
        "outputs": [outputs[f"r{i}"] for i in range(len(prompts))],
    }


def crossover(
    levels: list[dict[str, Any]], mode: str, key: str, margin: float, lower_is_better: bool = False
) -> dict[str, Any]:
    """Where ``mode`` stops paying against plain decoding by ``key`` (e.g. tokens/s).

    A level pays when the speed-up beats ``1 + margin`` (run-to-run noise on a shared machine
    is about that size). Speculation stops paying at the first level from which no higher
    level pays; if the highest level pays, it still pays at the highest level measured.
    """
    ratios = []
    for level in levels:
        ours, plain = level["modes"][mode][key], level["modes"][PLAIN][key]
        ratios.append(plain / ours if lower_is_better else ours / plain)
    speed_ups = {level["label"]: ratio for level, ratio in zip(levels, ratios, strict=True)}
    paying = [index for index, ratio in enumerate(ratios) if ratio > 1.0 + margin]
    if paying and paying[-1] == len(levels) - 1:
        top = levels[-1]
        return {
            "pays_at_highest_level": True,
            "stops_paying_at": None,
            "pays_up_to": top["concurrency"],
            "speed_ups": speed_ups,
            "summary": f"still pays at the highest level measured, {top['label']} "
            f"({ratios[-1]:.2f}x)",
        }
    first = paying[-1] + 1 if paying else 0
    level = levels[first]
    return {
        "pays_at_highest_level": False,
        "stops_paying_at": level["concurrency"],
        "pays_up_to": levels[paying[-1]]["concurrency"] if paying else None,
        "speed_ups": speed_ups,
        "summary": f"stops paying at {level['label']} ({ratios[first]:.2f}x; "
        f"no gain beyond {margin:.0%} from there on)",
    }


def strip(result: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in result.items() if key != "outputs"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--levels", default="1,2,4,8")
    parser.add_argument("--margin", type=float, default=0.05)
    parser.add_argument("--ngram-tokens", type=int, default=4)
    parser.add_argument("--draft-layers", type=int, default=26)
    parser.add_argument("--draft-tokens", type=int, default=2)
    args = parser.parse_args()
    levels = sorted({int(level) for level in args.levels.split(",") if level.strip()} | {1})

    _, tokenizer, paged = load_model()
    layers = paged.shape.num_layers
    rows, source = workload(args.requests)
    prompts = [chat_ids(tokenizer, TASK + row["passage"]) for row in rows]
    machine = machine_info()
    ngram = f"prompt lookup (n-gram, k={args.ngram_tokens})"
    ngram_adaptive = f"prompt lookup, adaptive k (<= {args.ngram_tokens})"
    sweep_modes: dict[str, SpeculativeConfig | None] = {
        PLAIN: None,
        ngram: SpeculativeConfig("ngram", num_tokens=args.ngram_tokens),
    }
    draft = f"draft model (first {args.draft_layers} of {layers} layers, k={args.draft_tokens})"
    draft_adaptive = (
        f"draft model (first {args.draft_layers} of {layers} layers), adaptive k "
        f"(<= {args.draft_tokens})"
    )
    low_modes = {
        ngram_adaptive: SpeculativeConfig("ngram", num_tokens=args.ngram_tokens, adaptive=True),
        draft: SpeculativeConfig(
            "draft", num_tokens=args.draft_tokens, draft_layers=args.draft_layers
        ),
        draft_adaptive: SpeculativeConfig(
            "draft", num_tokens=args.draft_tokens, draft_layers=args.draft_layers, adaptive=True
        ),
    }

    # --- across load; level 1 doubles as the low-load run of plain decoding and prompt lookup
    sweep: list[dict[str, Any]] = []
    for concurrency in levels:
        label = f"{concurrency} running"
        if concurrency >= len(prompts):
            concurrency = len(prompts)
            label = f"{concurrency} running (all at once)"
        level: dict[str, Any] = {"label": label, "concurrency": concurrency, "modes": {}}
        for name, config in sweep_modes.items():
            print(f"{label}: {name} ...", flush=True)
            level["modes"][name] = run(paged, prompts, args.max_tokens, config, concurrency)
        level["load_average_1m"] = machine_info()["load_average_1m"]
        sweep.append(level)
        if concurrency == len(prompts):
            break

    # --- low load: one request at a time, the adaptive modes and the draft model too
    low = dict(sweep[0]["modes"])
    for name, config in low_modes.items():
        print(f"low load: {name} ...", flush=True)
        low[name] = run(paged, prompts, args.max_tokens, config, 1)
    machine["load_average_1m_end"] = machine_info()["load_average_1m"]

    # --- identical greedy output, at every level and in every mode
    mismatches = [
        f"low load: {name}" for name, r in low.items() if r["outputs"] != low[PLAIN]["outputs"]
    ]
    for level in sweep:
        for name, r in level["modes"].items():
            same = r["outputs"] == level["modes"][PLAIN]["outputs"]
            r["same_output_as_plain"] = same
            if not same:
                mismatches.append(f"{level['label']}: {name}")

    plain_low = low[PLAIN]
    table = markdown_table(
        [
            "mode",
            "output tokens/s",
            "speed-up",
            "speed-up per CPU-second",
            "tokens per step",
            "draft acceptance",
            "same greedy output",
        ],
        [
            [
                name,
                f"{r['tokens_per_s']:.1f}",
                f"{r['tokens_per_s'] / plain_low['tokens_per_s']:.2f}x",
                f"{r['tokens_per_cpu_s'] / plain_low['tokens_per_cpu_s']:.2f}x",
                f"{r['tokens_per_step']:.2f}",
                f"{r['acceptance_rate'] * 100:.0f}%" if r["draft_tokens"] else "-",
                "yes" if r["outputs"] == plain_low["outputs"] else "NO",
            ]
            for name, r in low.items()
        ],
    )
    load_rows = []
    for level in sweep:
        plain = level["modes"][PLAIN]
        for name, r in level["modes"].items():
            load_rows.append(
                [
                    level["label"],
                    name,
                    r["requests"],
                    f"{r['tokens_per_s']:.1f}",
                    f"{r['tokens_per_s'] / plain['tokens_per_s']:.2f}x",
                    f"{r['tokens_per_cpu_s'] / plain['tokens_per_cpu_s']:.2f}x",
                    f"{r['tpot_mean_ms']:.0f}",
                    f"{r['tpot_p50_ms']:.0f}",
                    f"{r['tpot_p99_ms']:.0f}",
                    f"{r['acceptance_rate'] * 100:.0f}%" if r["draft_tokens"] else "-",
                    "yes" if r["same_output_as_plain"] else "NO",
                ]
            )
    table_load = markdown_table(
        [
            "load",
            "mode",
            "requests",
            "output tokens/s",
            "speed-up",
            "speed-up per CPU-second",
            "TPOT mean (ms)",
            "TPOT p50 (ms)",
            "TPOT p99 (ms)",
            "draft acceptance",
            "same greedy output",
        ],
        load_rows,
    )
    crossovers = {
        name: {
            "wall_clock": crossover(sweep, name, "tokens_per_s", args.margin),
            "cpu_time": crossover(sweep, name, "tokens_per_cpu_s", args.margin),
            "tpot_mean": crossover(sweep, name, "tpot_mean_ms", args.margin, lower_is_better=True),
        }
        for name in (ngram,)
    }
    payload = {
        "benchmark": "torch_speculative",
        "machine": machine,
        "workload": source
        | {
            "task": "summarise a BoolQ passage in two or three sentences",
            "instruction": TASK.strip(),
        },
        "parameters": vars(args),
        "results": {name: strip(r) for name, r in low.items()},
        "outputs_identical": not mismatches,
        "mismatches": mismatches,
        "table": table,
        "load_sweep": [
            {
                "label": level["label"],
                "concurrency": level["concurrency"],
                "load_average_1m": level["load_average_1m"],
                "modes": {name: strip(r) for name, r in level["modes"].items()},
            }
            for level in sweep
        ],
        "crossover": crossovers,
        "stops_paying": {name: c["wall_clock"]["summary"] for name, c in crossovers.items()},
        "table_load": table_load,
    }
    write_result("torch_speculative", payload)
    print(table)
    print()
    print(table_load)
    for name, c in crossovers.items():
        print(
            f"{name}: throughput {c['wall_clock']['summary']}; per CPU-second "
            f"{c['cpu_time']['summary']}; mean TPOT {c['tpot_mean']['summary']}"
        )
    if mismatches:
        print(f"greedy output differs from plain decoding: {mismatches}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
