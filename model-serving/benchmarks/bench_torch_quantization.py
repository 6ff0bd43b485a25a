"""(d) INT8 / INT4 weights vs fp32: decode speed, weight memory, perplexity on held-out text.

Held-out text: BoolQ passages (never used as prompts by these benchmarks), the first
``--ppl-tokens`` tokens of each. Speed: greedy decoding of ``--tokens`` tokens per request (EOS
ignored) for one request and for a batch. Agreement: the share of the fp32 model's greedy
tokens that each mode reproduces before its first divergence.

Usage: python benchmarks/bench_torch_quantization.py [--tokens 24] [--batch 8]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Any

import torch
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
from genai_factory.serving.torch_engine.quantization import quantize_model
from genai_factory.serving.torch_engine.sampling import SamplingParams

MODES = ["none", "int8", "int8-weight-only", "int4"]


def decode(
    paged: PagedLlama, prompts: list[list[int]], tokens: int
) -> tuple[float, list[list[int]]]:
    core = EngineCore(paged, EngineConfig(num_blocks=128), eos_token_ids={2})
    params = SamplingParams(temperature=0.0, max_tokens=tokens, ignore_eos=True)
    outputs: dict[str, list[int]] = {f"r{i}": [] for i in range(len(prompts))}
    start = time.perf_counter()
    for index, prompt in enumerate(prompts):
        core.add_request(GenerationRequest(f"r{index}", tuple(prompt), params))
    while core.has_work():
        for event in core.step():
            outputs[event.request_id].extend(event.token_ids)
    wall = time.perf_counter() - start
    return tokens * len(prompts) / wall, list(outputs.values())


def perplexity(paged: PagedLlama, texts: list[list[int]]) -> float:
    total, count = 0.0, 0
    for ids in texts:
        logprobs = paged.score(ids)
        total -= float(logprobs.sum())
        count += logprobs.numel()
    return math.exp(total / count)


def agreement(reference: list[list[int]], other: list[list[int]]) -> float:
    same = 0
    for ref, out in zip(reference, other, strict=True):
        for a, b in zip(ref, out, strict=True):
            if a != b:
                break
            same += 1
    return same / sum(len(r) for r in reference)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=24)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--ppl-texts", type=int, default=6)
    parser.add_argument("--ppl-tokens", type=int, default=192)
    args = parser.parse_args()

    hf_model, tokenizer, fp32 = load_model()
    rows, source = workload(200 + args.ppl_texts)
    prompts = [chat_ids(tokenizer, r["question"].capitalize() + "?") for r in rows[: args.batch]]
    held_out = [
        tokenizer.encode(r["passage"], add_special_tokens=False)[: args.ppl_tokens]
        for r in rows[200 : 200 + args.ppl_texts]
    ]
    machine = machine_info()
    results: dict[str, dict[str, Any]] = {}
    reference: list[list[int]] = []
    for mode in MODES:
        print(f"{mode} ...", flush=True)
        model = fp32 if mode == "none" else quantize_model(PagedLlama.from_hf(hf_model), mode)
        assert isinstance(model, PagedLlama)
        single, _ = decode(model, prompts[:1], args.tokens)
        batched, outputs = decode(model, prompts, args.tokens)
        if mode == "none":
            reference = outputs
        with torch.inference_mode():
            ppl = perplexity(model, held_out)
        results[mode] = {
            "weight_mib": model.weight_bytes() / 2**20,
            "tokens_per_s_batch_1": single,
            f"tokens_per_s_batch_{args.batch}": batched,
            "perplexity": ppl,
            "greedy_agreement_with_fp32": agreement(reference, outputs),
        }
        if mode != "none":
            del model
    machine["load_average_1m_end"] = machine_info()["load_average_1m"]
    base = results["none"]
    table_rows = [
        [
            "fp32" if mode == "none" else mode,
            f"{r['weight_mib']:.0f}",
            f"{r['tokens_per_s_batch_1']:.1f}",
            f"{r[f'tokens_per_s_batch_{args.batch}']:.1f}",
            f"{r['perplexity']:.2f} ({(r['perplexity'] / base['perplexity'] - 1) * 100:+.1f}%)",
            f"{r['greedy_agreement_with_fp32'] * 100:.0f}%",
        ]
        for mode, r in results.items()
    ]
    table = markdown_table(
        [
            "weights",
            "weight MiB",
            "tokens/s (1 request)",
            f"tokens/s ({args.batch} requests)",
            "perplexity (held-out)",
            "greedy tokens equal to fp32",
        ],
        table_rows,
    )
    payload = {
        "benchmark": "torch_quantization",
        "machine": machine,
        "workload": source
        | {
            "held_out": f"{args.ppl_texts} BoolQ passages (rows 200+), {args.ppl_tokens} tokens each"
        },
        "parameters": vars(args),
        "results": results,
        "notes": "GPTQ/AWQ not measured: calibrated 4-bit needs GPU kernels (documented only).",
        "table": table,
    }
    write_result("torch_quantization", payload)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
