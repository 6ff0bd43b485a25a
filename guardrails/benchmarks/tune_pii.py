"""Choose the NER score threshold on the development third of the PII set (never the test part).

The reported benchmark (bench_pii.py) scores the records whose index is not divisible by 3; this
script sweeps ``PresidioNER(threshold=...)`` over the others and prints macro F1 over the NER
entity types, so the default threshold is chosen without looking at the test records.

Usage: python benchmarks/tune_pii.py
"""

from __future__ import annotations

import json
from collections import defaultdict

import common
import gf_data
from bench_pii import GOLD_TO_COMMON, OURS_TO_COMMON, match, scores

NER_TYPES = ("PERSON", "LOCATION", "ORGANIZATION", "NRP")
THRESHOLDS = (0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7)


def main() -> None:
    from genai_factory.guardrails.pii import PIIAnalyzer
    from genai_factory.guardrails.pii.ner import PresidioNER

    records = [r for i, r in enumerate(gf_data.presidio_synth()) if i % 3 == 0]
    ner = PresidioNER(entities=[*NER_TYPES, "DATE_TIME"], threshold=0.0)
    analyzer = PIIAnalyzer(ner=ner, score_threshold=0.0)
    analyzer.warm_up()
    # score every record once at threshold 0; each candidate threshold filters the same output
    outputs = []
    for record in records:
        text = record["full_text"]
        gold = [
            (GOLD_TO_COMMON[s["entity_type"]], s["start_position"], s["end_position"])
            for s in record["spans"]
            if s["entity_type"] in GOLD_TO_COMMON
        ]
        found = [
            (OURS_TO_COMMON.get(d.entity_type, d.entity_type), d.start, d.end, d.score, d.layer)
            for d in analyzer.analyze(text).detections
        ]
        outputs.append((gold, found))
    table = {}
    for threshold in THRESHOLDS:
        totals: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
        for gold, found in outputs:
            kept = [
                (t, s, e) for t, s, e, score, layer in found if layer != "ner" or score >= threshold
            ]
            for entity, counts in match(gold, kept).items():
                for k in range(3):
                    totals[entity][k] += counts[k]
        f1 = {e: scores(totals[e])["f1"] for e in NER_TYPES}
        table[threshold] = {"macro_f1": round(sum(f1.values()) / len(f1), 4), **f1}
        print(threshold, json.dumps(table[threshold]))
    top = max(row["macro_f1"] for row in table.values())
    plateau = [t for t in THRESHOLDS if table[t]["macro_f1"] == top]
    best = plateau[len(plateau) // 2]  # the middle of the best plateau: least fragile
    print(f"best threshold on the development third: {best}")
    common.write(
        "pii_tuning",
        {
            "benchmark": "pii threshold sweep",
            "split": "development: index % 3 == 0 (the reported test split is index % 3 != 0)",
            "records": len(records),
            "sweep": table,
            "best": best,
            "machine": common.machine(),
        },
    )


if __name__ == "__main__":
    main()
