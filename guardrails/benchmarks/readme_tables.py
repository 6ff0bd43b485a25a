"""Regenerate the README's benchmark tables from ``results/*.json`` (never typed by hand).

The README holds the generated block between ``<!-- bench:begin -->`` and ``<!-- bench:end -->``;
everything in it comes from the JSON the benchmarks wrote, including the machine and its load.
``run.py`` calls this after the benchmarks; run it alone after editing a result file by rerunning
a single benchmark.

Usage: python benchmarks/readme_tables.py [--check]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
README = HERE.parent / "README.md"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _machine(m: dict[str, Any]) -> str:
    load = m.get("load_avg_1m_at_start")
    load_text = f"1-minute load average {load:.1f} at the start" if load is not None else "load n/a"
    return f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores, Python {m.get('python', '?')}; {load_text}"


def _prf(row: dict[str, Any]) -> str:
    return f"{row['precision']:.2f} / {row['recall']:.2f} / {row['f1']:.3f}"


def pii_section(data: dict[str, Any], tuning: dict[str, Any] | None) -> list[str]:
    lines = [
        f"**PII** (presidio-evaluator synthetic set, {data['data']['records']} texts of split "
        f"`{data['data']['split']}`; same spaCy model for both; a hit is the right type on an "
        f"overlapping span; {_machine(data['machine'])}):",
        "",
        "| entity | gold | ours P / R / F1 | Presidio default P / R / F1 | F1 |",
        "|---|---|---|---|---|",
    ]
    for entity, row in data["per_type"].items():
        ours, theirs = row["ours"], row["presidio"]
        if not row["presidio_supports"]:
            verdict, shown = "(Presidio has none)", "-"
        else:
            verdict = (
                "**ours**"
                if ours["f1"] > theirs["f1"]
                else "tie"
                if ours["f1"] == theirs["f1"]
                else "Presidio"
            )
            shown = _prf(theirs)
        lines.append(f"| {entity} | {row['gold']} | {_prf(ours)} | {shown} | {verdict} |")
    lo, lp = data["latency"]["ours"], data["latency"]["presidio"]
    lines += [
        "",
        f"Latency per text: ours p50 {lo['p50_ms']:.1f} ms / p99 {lo['p99_ms']:.1f} ms, "
        f"Presidio p50 {lp['p50_ms']:.1f} ms / p99 {lp['p99_ms']:.1f} ms (interleaved, same run).",
    ]
    if tuning:
        sweep = tuning["sweep"]
        best = str(tuning["best"])
        row = sweep.get(best) or sweep.get(float(best)) or {}
        lines += [
            "",
            f"NER threshold chosen on the development split only (`{tuning['split']}`, "
            f"{tuning['records']} texts, `benchmarks/tune_pii.py`): {best}, macro F1 "
            f"{row.get('macro_f1', float('nan')):.3f} over PERSON/LOCATION/ORGANIZATION/NRP there.",
        ]
    return lines


def injection_section(data: dict[str, Any]) -> list[str]:
    d = data["data"]
    lines = [
        f"**Prompt injection** (held-out test split: {d['malicious']} jailbreak / harmful prompts, "
        f"{d['benign']} benign; the classifier, its threshold and the similarity threshold never "
        f"saw it; {_machine(data['machine'])}):",
        "",
        "| layer | AUC | TPR @1% FPR | TPR @5% FPR | TPR / FPR at the shipped threshold |",
        "|---|---|---|---|---|",
    ]
    for name, row in data["layers"].items():
        label = f"**{name}**" if name == "combined" else name
        lines.append(
            f"| {label} | {row['auc']:.3f} | {row['tpr_at_1pct_fpr']:.3f} | "
            f"{row['tpr_at_5pct_fpr']:.3f} | {row['tpr_at_threshold']:.3f} / "
            f"{row['fpr_at_threshold']:.3f} |"
        )
    everyday = data.get("everyday_requests")
    if everyday:
        shares = everyday["flagged_share_at_threshold"]
        lines += [
            "",
            f"Everyday requests never trained on ({everyday['n']} in "
            "`benchmarks/data/everyday_requests.txt`), share flagged at the threshold:",
            "",
            "| " + " | ".join(shares) + " |",
            "|" + "---|" * len(shares),
            "| " + " | ".join(f"{v:.3f}" for v in shares.values()) + " |",
        ]
    by_source = data.get("by_source", {})
    benign = {k: v for k, v in by_source.items() if v["label"] == 0}
    if benign:
        lines += [
            "",
            "Benign test texts flagged (combined / jailguard) by source: "
            + "; ".join(
                f"{k} ({v['n']}) {v['flagged_share_ours']:.3f} / {v['flagged_share_jailguard']:.3f}"
                for k, v in benign.items()
            )
            + ".",
        ]
    lat = data["latency"]
    total = lat["ours_total"]
    lines += [
        "",
        f"Latency per text ({lat['latency_sample']}-text sample, shipped guard): combined p50 "
        f"{total['p50_ms']:.1f} ms / p99 {total['p99_ms']:.1f} ms; jailguard p50 "
        f"{lat['jailguard']['p50_ms']:.1f} ms / p99 {lat['jailguard']['p99_ms']:.1f} ms.",
    ]
    docs = lat.get("long_benign_documents")
    if docs:
        lines += [
            "",
            f"Long benign documents ({docs['n']} of about {docs['chars_mean']:.0f} characters, "
            f"benign test texts joined; {docs['windows_mean']:.1f} windows each, no early exit "
            f"possible): p50 {docs['p50_ms']:.1f} ms / p99 {docs['p99_ms']:.1f} ms.",
        ]
    every = lat.get("ours_total_every_window")
    if every:
        lines += [
            "",
            f"The same texts read to the end (no early exit), same run: p50 {every['p50_ms']:.1f} ms"
            f" / p99 {every['p99_ms']:.1f} ms.",
        ]
    if "ours_by_length" in lat:
        lines += [
            "",
            "| text length | n | p50 ms | p99 ms |",
            "|---|---|---|---|",
        ]
        for bucket, row in lat["ours_by_length"].items():
            lines.append(f"| {bucket} | {row['n']} | {row['p50_ms']:.1f} | {row['p99_ms']:.1f} |")
        for label, row in lat.get("ours_by_label", {}).items():
            lines.append(
                f"| all {label} | {row['n']} | {row['p50_ms']:.1f} | {row['p99_ms']:.1f} |"
            )
        windows = lat.get("windows_embedded", {})
        lines += [
            "",
            f"Windows embedded per text: mean {windows.get('mean', float('nan')):.2f}, max "
            f"{windows.get('max', 0)} (early exit at combined score {lat.get('early_exit')}).",
        ]
    lines += [
        "",
        "Per layer p50: "
        + ", ".join(
            f"{k.removeprefix('injection.')} {v['p50_ms']:.2f} ms"
            for k, v in lat["ours_per_layer"].items()
        )
        + ".",
    ]
    return lines


def streaming_section(data: dict[str, Any]) -> list[str]:
    rail = data["rail"]
    lines = [
        f"**Streaming rail** ({data['data']['texts']} synthetic texts, hold-back "
        f"{rail['holdback_chars']} characters; {_machine(data['machine'])}):",
        "",
        "| chunking | entities | caught | caught without hold-back | identical to whole-text "
        "redaction | scan per scanned chunk p50 / p99 |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in data["results"].items():
        chunk = row["scan_per_scanned_chunk"]
        lines.append(
            f"| {name} | {row['entities']} | {row['caught_share']:.1%} | "
            f"{row['naive_per_chunk_caught_share']:.1%} | "
            f"{row['identical_to_whole_text_share']:.1%} | "
            f"{chunk['p50_ms']:.2f} / {chunk['p99_ms']:.2f} ms |"
        )
    return lines


def render() -> str:
    parts: list[str] = [BEGIN, ""]
    pii = _load("pii")
    if pii:
        parts += [*pii_section(pii, _load("pii_tuning")), ""]
    injection = _load("injection")
    if injection:
        parts += [*injection_section(injection), ""]
    streaming = _load("streaming")
    if streaming:
        parts += [*streaming_section(streaming), ""]
    parts.append(END)
    return "\n".join(parts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the README is stale")
    args = parser.parse_args()
    text = README.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        print(f"{README} has no {BEGIN} ... {END} block", file=sys.stderr)
        return 1
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    updated = head + render() + tail
    if args.check:
        return 0 if updated == text else 1
    README.write_text(updated, encoding="utf-8")
    print(f"updated the benchmark tables in {README.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
