"""Runs every benchmarks/bench_*.py of this module in turn; each writes results/<name>.json.

Usage: python benchmarks/run.py [NAME ...]   (NAME = bench file stem without "bench_")
Before the PII benchmark, ``tune_pii.py`` sweeps the NER threshold on the development split (it
only reports; the shipped default is in the code). At the end ``readme_tables.py`` rewrites the
README's benchmark block from the JSON results.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def main() -> int:
    here = Path(__file__).resolve().parent
    wanted = set(sys.argv[1:])
    scripts = sorted(
        p for p in here.glob("bench_*.py") if not wanted or p.stem.removeprefix("bench_") in wanted
    )
    env = os.environ | {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS": "",
    }
    if any(p.stem == "bench_pii" for p in scripts):
        scripts.insert(0, here / "tune_pii.py")
    scripts.append(here / "readme_tables.py")
    for script in scripts:
        print(f"== {script.name}", flush=True)
        result = subprocess.run([sys.executable, str(script)], env=env, check=False, cwd=here)
        if result.returncode != 0:
            print(f"{script.name} failed with exit code {result.returncode}", file=sys.stderr)
            return result.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
