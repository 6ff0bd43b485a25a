"""Runs every benchmarks/bench_*.py of this module in turn (each writes results/<name>.json), then
regenerates the README's benchmark tables from those JSON files.

Usage: python benchmarks/run.py [NAME ...]   (NAME = bench file stem without "bench_")
       python benchmarks/run.py --tables     (only regenerate the README tables)

The README marks each generated block with ``<!-- bench:NAME -->`` ... ``<!-- /bench:NAME -->``
(NAME = a results file stem). The block becomes the machine the figures were taken on and the
Markdown table the benchmark stored under ``"table"`` in ``results/NAME.json``; a block named
``NAME:KEY`` renders ``KEY`` instead (a table, or a mapping rendered as one line per entry). No
figure in those blocks is ever typed by hand.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
README = HERE.parent / "README.md"

_BLOCK = re.compile(
    r"(<!-- bench:(?P<name>[\w.:-]+) -->\n)(?P<body>.*?)(<!-- /bench:(?P=name) -->)", re.S
)


def _load_averages(machine: dict[str, Any]) -> str:
    """The load average(s) a result was taken under, whichever way its script recorded them."""
    before = machine.get("load_average_before") or machine.get("load_average_1m")
    after = machine.get("load_average_after") or machine.get("load_average_1m_end")

    def first(value: Any) -> str:
        if isinstance(value, list | tuple):
            value = value[0] if value else None
        return f"{value:.1f}" if isinstance(value, int | float) else "?"

    if after is None:
        return f"1-minute load average {first(before)}"
    return f"1-minute load average {first(before)} before, {first(after)} after"


def machine_line(data: dict[str, Any]) -> str:
    """One line: where and under what load the figures of ``data`` were measured."""
    machine = data.get("machine") or {}
    cores = machine.get("cores") or machine.get("cpus")
    parts = [
        str(machine.get("cpu") or "unknown CPU"),
        f"{cores} CPUs" if cores else None,
        f"Python {machine['python']}" if machine.get("python") else None,
        _load_averages(machine),
    ]
    return "Measured on: " + ", ".join(p for p in parts if p) + "."


def _as_markdown(value: Any) -> str:
    """A stored table as it is; a mapping (e.g. mode -> verdict) as one bullet per entry."""
    if isinstance(value, dict):
        return "\n".join(f"- {key}: {item}" for key, item in value.items())
    return str(value).strip()


def render(readme: str, results: Path) -> tuple[str, list[str]]:
    """``readme`` with every marked block regenerated from ``results``; the names left as they
    were (no JSON, or a JSON without a table)."""
    skipped: list[str] = []

    def block(match: re.Match[str]) -> str:
        name = match.group("name")
        stem, _, key = name.partition(":")
        path = results / f"{stem}.json"
        try:
            data = json.loads(path.read_text())
            table = _as_markdown(data[key or "table"])
        except (OSError, ValueError, KeyError):
            skipped.append(name)
            return match.group(0)
        return f"{match.group(1)}{machine_line(data)}\n\n{table}\n{match.group(4)}"

    return _BLOCK.sub(block, readme), skipped


def update_readme(readme: Path | None = None, results: Path | None = None) -> list[str]:
    """Rewrite the README's tables in place; returns the blocks that could not be filled."""
    readme = readme or README
    text, skipped = render(readme.read_text(), results or RESULTS)
    readme.write_text(text)
    return skipped


def main(argv: list[str]) -> int:
    if argv == ["--tables"]:
        skipped = update_readme()
        print(f"README tables regenerated{'; kept: ' + ', '.join(skipped) if skipped else ''}")
        return 0
    wanted = set(argv)
    scripts = sorted(
        p for p in HERE.glob("bench_*.py") if not wanted or p.stem.removeprefix("bench_") in wanted
    )
    if not scripts:
        print("model-serving: no benchmark scripts found")
        return 0
    env = os.environ | {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    failed = []
    started = time.perf_counter()
    for script in scripts:
        print(f"== {script.name}", flush=True)
        began = time.perf_counter()
        result = subprocess.run([sys.executable, str(script)], env=env, check=False)
        print(f"== {script.name}: {time.perf_counter() - began:.0f} s", flush=True)
        if result.returncode != 0:
            print(f"{script.name} failed with exit code {result.returncode}", file=sys.stderr)
            failed.append(script.name)
    # the tables are rebuilt even if one benchmark failed: the others' figures are fresh
    skipped = update_readme()
    print(f"== all benchmarks: {time.perf_counter() - started:.0f} s; README tables regenerated")
    if skipped:
        print(f"README blocks without results (left as they were): {', '.join(skipped)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
