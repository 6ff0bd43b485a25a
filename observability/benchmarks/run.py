"""Runs every benchmarks/bench_*.py of this module in turn (each writes results/<name>.json),
then regenerates the README's Benchmarks section from the results (benchmarks/report.py).

Usage: python benchmarks/run.py [NAME ...]   (NAME = bench file stem without "bench_")
Extra arguments for one benchmark: GF_BENCH_ARGS_<NAME>="--spans 200000" (e.g. _STORE).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path


def main() -> int:
    here = Path(__file__).resolve().parent
    wanted = set(sys.argv[1:])
    scripts = sorted(
        p for p in here.glob("bench_*.py") if not wanted or p.stem.removeprefix("bench_") in wanted
    )
    if not scripts:
        print("observability: no benchmark scripts found")
        return 0
    env = os.environ | {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    for script in scripts:
        name = script.stem.removeprefix("bench_").upper()
        extra = shlex.split(os.environ.get(f"GF_BENCH_ARGS_{name}", ""))
        print(f"== {script.name} {' '.join(extra)}", flush=True)
        result = subprocess.run([sys.executable, str(script), *extra], env=env, check=False)
        if result.returncode != 0:
            print(f"{script.name} failed with exit code {result.returncode}", file=sys.stderr)
            return result.returncode
    # The README's Benchmarks section is always regenerated from the JSON results.
    return subprocess.run(
        [sys.executable, str(here / "report.py")], env=env, check=False
    ).returncode


if __name__ == "__main__":
    sys.exit(main())
