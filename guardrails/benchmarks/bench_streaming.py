"""The streaming output rail: share of entities caught when split across chunks, and added latency.

Texts: the presidio-evaluator synthetic texts (held-out two thirds) that contain at least one
entity the rule recognisers find when scanning the whole text. Each text is streamed in chunks of
4 characters (about one token) and in random chunks of 1-12 characters; an entity counts as caught
when its text does not appear in the streamed output. The baseline scans each chunk on its own,
without a hold-back. Added latency: scanning time per chunk, and the hold-back in characters.

Usage: python benchmarks/bench_streaming.py [--texts N]
"""

from __future__ import annotations

import argparse
import random
import time
from typing import Any

import common
import gf_data


def chunked(text: str, sizes: list[int]) -> list[str]:
    out, position, i = [], 0, 0
    while position < len(text):
        out.append(text[position : position + sizes[i % len(sizes)]])
        position += sizes[i % len(sizes)]
        i += 1
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--texts", type=int, default=400)
    parser.add_argument("--holdback", type=int, default=64)
    args = parser.parse_args()

    from genai_factory.guardrails.pii import Anonymizer, PIIAnalyzer
    from genai_factory.guardrails.streaming import StreamingRail

    analyzer = PIIAnalyzer(use_ner=False)
    anonymizer = Anonymizer()
    records = [r for i, r in enumerate(gf_data.presidio_synth()) if i % 3 != 0]
    items = []
    for record in records:
        detections = analyzer.analyze(record["full_text"]).detections
        if detections:
            items.append((record["full_text"], detections))
        if len(items) >= args.texts:
            break

    rng = random.Random(0)
    schemes = {"4-char chunks": [4], "random 1-12 chunks": [rng.randint(1, 12) for _ in range(997)]}
    results: dict[str, Any] = {}
    for scheme, sizes in schemes.items():
        caught = total = identical = naive_caught = 0
        chunk_ms: list[float] = []
        scanned_ms: list[float] = []
        per_text_ms: list[float] = []
        for text, detections in items:
            rail = StreamingRail(analyzer=analyzer, holdback_chars=args.holdback)
            pieces = []
            for chunk in chunked(text, sizes):
                before = rail.scan_ms
                t0 = time.perf_counter()
                pieces.append(rail.feed(chunk))
                chunk_ms.append((time.perf_counter() - t0) * 1000)
                if rail.scan_ms > before:
                    scanned_ms.append(chunk_ms[-1])
            pieces.append(rail.flush())
            per_text_ms.append(rail.scan_ms)
            streamed = "".join(pieces)
            naive = "".join(
                anonymizer.anonymize(c, analyzer.analyze(c).detections).text
                for c in chunked(text, sizes)
            )
            whole = anonymizer.anonymize(text, detections).text
            identical += streamed == whole
            for d in detections:
                total += 1
                caught += d.text not in streamed
                naive_caught += d.text not in naive
        results[scheme] = {
            "entities": total,
            "caught_share": round(caught / total, 4),
            "naive_per_chunk_caught_share": round(naive_caught / total, 4),
            "identical_to_whole_text_share": round(identical / len(items), 4),
            "scan_per_chunk": common.summary_ms(chunk_ms),
            "scan_per_scanned_chunk": common.summary_ms(scanned_ms),
            "scan_per_text": common.summary_ms(per_text_ms),
        }
    result = {
        "benchmark": "streaming",
        "machine": common.machine(),
        "versions": common.versions("phonenumbers", "genai-factory-guardrails"),
        "data": {
            "source": "presidio-evaluator==0.3.2 synth_dataset_v2.json (held-out two thirds)",
            "texts": len(items),
        },
        "rail": {
            "analyzer": "rule recognisers (no NER)",
            "holdback_chars": args.holdback,
            "context_chars": 48,
        },
        "results": results,
    }
    path = common.write("streaming", result)
    m = result["machine"]
    print(
        f"\n### Streaming rail ({len(items)} texts with entities, hold-back {args.holdback} chars; {m['cpu']}, {m['cores']} cores)\n"
    )
    print(
        "| chunking | entities | caught (rail) | caught (per-chunk scan, no hold-back) | output = whole-text redaction | scan per scanned chunk p50 / p99 | scan per text p50 |"
    )
    print("|---|---|---|---|---|---|---|")
    for scheme, row in results.items():
        lat = row["scan_per_scanned_chunk"]
        print(
            f"| {scheme} | {row['entities']} | {row['caught_share']:.1%} | {row['naive_per_chunk_caught_share']:.1%} | {row['identical_to_whole_text_share']:.1%} | {lat['p50_ms']:.3f} / {lat['p99_ms']:.3f} ms | {row['scan_per_text']['p50_ms']:.2f} ms |"
        )
    print(
        f"\nAdded delay: the last {args.holdback} characters (about {args.holdback // 4} tokens) wait for the next chunks; the scan itself adds the per-chunk time above."
    )
    print(f"(raw figures: {path.relative_to(common.HERE.parent)})")


if __name__ == "__main__":
    main()
