"""(c) Speculative decoding at low load (one request at a time) on an input-grounded task.

The task asks the model to repeat a BoolQ passage's opening sentences, so the answer quotes its
input: the case prompt lookup is made for. Greedy; every mode must produce the same tokens.
Modes: plain decoding, prompt lookup (n-gram), and the self-speculative draft model (the first
``--draft-layers`` layers of the same weights).

Usage: python benchmarks/bench_torch_speculative.py [--requests 6] [--max-tokens 64]
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
    workload,
    write_result,
)

from genai_factory.serving.torch_engine.core import EngineConfig, EngineCore, GenerationRequest
from genai_factory.serving.torch_engine.model import PagedLlama
from genai_factory.serving.torch_engine.sampling import SamplingParams
from genai_factory.serving.torch_engine.speculative import SpeculativeConfig


def opening(passage: str, sentences: int = 2) -> str:
    parts = passage.split(". ")
    return ". ".join(parts[:sentences]).rstrip(".") + "."


def run(
    paged: PagedLlama,
    prompts: list[list[int]],
    max_tokens: int,
    speculative: SpeculativeConfig | None,
) -> dict[str, Any]:
    core = EngineCore(
        paged, EngineConfig(num_blocks=256, speculative=speculative), eos_token_ids={2}
    )
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens)
    outputs: list[list[int]] = []
    start = time.perf_counter()
    for index, prompt in enumerate(prompts):  # one at a time: low load
        core.add_request(GenerationRequest(f"r{index}", tuple(prompt), params))
        tokens: list[int] = []
        while core.has_work():
            for event in core.step():
                tokens.extend(event.token_ids)
        outputs.append(tokens)
    wall = time.perf_counter() - start
    stats = core.stats
    generated = sum(len(t) for t in outputs)
    return {
        "wall_s": wall,
        "tokens": generated,
        "tokens_per_s": generated / wall,
        "steps": stats.steps,
        "tokens_per_step": generated / max(1, stats.steps),
        "draft_tokens": stats.draft_tokens,
        "accepted_draft_tokens": stats.accepted_draft_tokens,
        "acceptance_rate": stats.acceptance_rate,
        "outputs": outputs,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=6)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--ngram-tokens", type=int, default=4)
    parser.add_argument("--draft-layers", type=int, default=26)
    parser.add_argument("--draft-tokens", type=int, default=2)
    args = parser.parse_args()

    _, tokenizer, paged = load_model()
    rows, source = workload(args.requests)
    prompts = [
        chat_ids(tokenizer, "Repeat this text word for word:\n\n" + opening(row["passage"]))
        for row in rows
    ]
    machine = machine_info()
    modes = {
        "plain decoding": None,
        f"prompt lookup (n-gram, k={args.ngram_tokens})": SpeculativeConfig(
            "ngram", num_tokens=args.ngram_tokens
        ),
        f"draft model (first {args.draft_layers} of 30 layers, k={args.draft_tokens})": (
            SpeculativeConfig("draft", num_tokens=args.draft_tokens, draft_layers=args.draft_layers)
        ),
    }
    results: dict[str, Any] = {}
    for name, config in modes.items():
        print(f"{name} ...", flush=True)
        results[name] = run(paged, prompts, args.max_tokens, config)
    machine["load_average_1m_end"] = machine_info()["load_average_1m"]
    plain = results["plain decoding"]
    rows_out = []
    for name, result in results.items():
        same = result["outputs"] == plain["outputs"]
        rows_out.append(
            [
                name,
                f"{result['tokens_per_s']:.1f}",
                f"{result['tokens_per_s'] / plain['tokens_per_s']:.2f}x",
                f"{result['tokens_per_step']:.2f}",
                f"{result['acceptance_rate'] * 100:.0f}%" if result["draft_tokens"] else "-",
                "yes" if same else "NO",
            ]
        )
    table = markdown_table(
        [
            "mode",
            "output tokens/s",
            "speed-up",
            "tokens per step",
            "draft acceptance",
            "same greedy output",
        ],
        rows_out,
    )
    payload = {
        "benchmark": "torch_speculative",
        "machine": machine,
        "workload": source | {"task": "repeat the opening two sentences of a BoolQ passage"},
        "parameters": vars(args),
        "results": {
            k: {key: v for key, v in r.items() if key != "outputs"} for k, r in results.items()
        },
        "outputs_identical": all(r["outputs"] == plain["outputs"] for r in results.values()),
        "table": table,
    }
    write_result("torch_speculative", payload)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
