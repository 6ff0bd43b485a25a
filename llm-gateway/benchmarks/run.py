"""The gateway benchmark: side by side, one run, one machine.

Targets, each behind the same fast mock upstream (``fast_upstream.py``):
  direct        the load generator talks to the upstream itself (the floor)
  minimal       a minimal Starlette + httpx pass-through (``minimal_proxy.py``)
  gateway-bare  our gateway, every optional stage off (routing + failover only)
  gateway-full  our gateway, default pipeline: API-key auth, in-process rate limits (RPM + TPM),
                exact cache (requests are not cacheable: temperature 0.7), usage ledger, metrics
  litellm       LiteLLM proxy 1.106.2, no database (installed into benchmarks/.cache/litellm-venv)

The server under test is pinned to core 0, the load generator and the upstream to core 1
(``taskset``). Closed loop at concurrency 1, 16 and 64, a streaming run at 16, an open loop at a
fixed rate (75 req/s), cold start (process start to first healthy answer), and resident memory
after the load.

Usage:
  python benchmarks/run.py [--seconds 4] [--skip-litellm]   # `make bench`: bench, soak, README
  python benchmarks/run.py bench [--seconds 4]              # the side-by-side run only
  python benchmarks/run.py soak [--seconds 90]      # fails (exit 1) when memory keeps growing
Writes benchmarks/results/<name>.json; the default mode also rewrites the figures block of the
module README from those files. Every mode holds /tmp/bench.lock while it runs (benchmarks on
this machine never overlap); the LiteLLM proxy's own venv is created on first use.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
README = HERE.parent / "README.md"
LOCK = Path("/tmp/bench.lock")  # noqa: S108 - the machine-wide lock every benchmark shares
PEER_VENV = HERE / ".cache" / "litellm-venv"
PEER_REQUIREMENT = "litellm[proxy]==1.106.2"
OPEN_LOOP_RPS = 75.0
PY = sys.executable
KEY = "sk-bench-key-000000000001"
# LiteLLM refuses to start without a strong master key; requests then authenticate with it
LITELLM_KEY = "sk-" + "5e1f" * 16
ENV = os.environ | {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_LOG": "ERROR",
    "DO_NOT_TRACK": "true",
    "GF_LOG_LEVEL": "WARNING",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pin(core: int) -> list[str]:
    if shutil.which("taskset") and len(os.sched_getaffinity(0)) >= 2:
        return ["taskset", "-c", str(sorted(os.sched_getaffinity(0))[core])]
    return []


def start(command: list[str], core: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        pin(core) + command,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout_s: float) -> float:
    """Seconds until ``url`` answers 200 (the process was started just before)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as answer:  # noqa: S310 - loopback
                if answer.status == 200:
                    return time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.01)
    raise TimeoutError(f"{url} not ready after {timeout_s}s")


def rss_mib(pid: int) -> float:
    """Resident memory of a process and its children (uvicorn and LiteLLM may fork)."""
    total = 0
    pids = [pid]
    with contextlib.suppress(OSError):
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        pids += [int(c) for c in children]
    for one in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{one}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return round(total / 1024, 1)


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (robust to a busy machine, unlike wall time)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load_measured(
    pid: int, url: str, concurrency: int, seconds: float, stream: bool, key: str | None
) -> dict[str, Any]:
    """A load level, plus the server's CPU milliseconds per answered request."""
    before = cpu_s(pid)
    row = load(url, concurrency, seconds, stream, key)
    spent = cpu_s(pid) - before
    # the 0.5 s warm-up is inside the CPU figure too: count its requests in proportion
    requests = row["requests"] * (seconds + 0.5) / seconds
    row["server_cpu_ms_per_request"] = round(spent * 1000 / requests, 3) if requests else None
    return row


def load(
    url: str,
    concurrency: int,
    seconds: float,
    stream: bool,
    key: str | None,
    rate: float = 0.0,
) -> dict[str, Any]:
    command = [PY, str(HERE / "loadgen.py"), url, str(concurrency), str(seconds)]
    if stream:
        command.append("--stream")
    if rate:
        command += ["--rate", str(rate)]
    if key:
        command += ["--key", key]
    output = subprocess.run(
        pin(1) + command, env=ENV, capture_output=True, text=True, check=True, timeout=seconds + 60
    )
    return dict(json.loads(output.stdout.strip().splitlines()[-1]))


def gateway_config(path: Path, upstream: str, full: bool) -> None:
    data: dict[str, Any] = {
        "deployments": [
            {
                "name": "upstream",
                "model": "bench",
                "base_url": upstream,
                "max_connections": 256,
                "timeouts": {"connect_s": 2, "ttft_s": 10, "idle_s": 10, "total_s": 30},
            }
        ],
        "auth": {"keys_env": None},
        "cache": {"enabled": False},
        "log_level": "WARNING",
    }
    if full:
        data["auth"] = {
            "keys": [{"key": KEY, "subject": "bench", "org_id": "bench"}],
            "keys_env": None,
        }
        data["rate_limits"] = [{"scope": "key", "rpm": 10**9, "tpm": 10**12}]
        data["cache"] = {"enabled": True}
    path.write_text(yaml.safe_dump(data))


def litellm_config(path: Path, upstream: str) -> None:
    path.write_text(
        yaml.safe_dump(
            {
                "model_list": [
                    {
                        "model_name": "bench",
                        "litellm_params": {
                            "model": "openai/bench",
                            "api_base": upstream,
                            "api_key": "sk-none",
                        },
                    }
                ],
                "litellm_settings": {"telemetry": False, "set_verbose": False},
                "general_settings": {"master_key": LITELLM_KEY},
            }
        )
    )


def targets(workdir: Path, upstream: str, skip_litellm: bool) -> dict[str, dict[str, Any]]:
    bare, full, peer = workdir / "bare.yaml", workdir / "full.yaml", workdir / "litellm.yaml"
    gateway_config(bare, upstream, full=False)
    gateway_config(full, upstream, full=True)
    litellm_config(peer, upstream)
    gateway = [PY, "-m", "genai_factory.gateway", "serve", "--port"]
    found: dict[str, dict[str, Any]] = {
        "minimal": {
            "command": lambda port: [PY, str(HERE / "minimal_proxy.py"), str(port), upstream],
            "health": "/health/liveness",
        },
        "gateway-bare": {
            "command": lambda port: [*gateway, str(port), "--config", str(bare)],
            "health": "/health/liveness",
        },
        "gateway-full": {
            "command": lambda port: [*gateway, str(port), "--config", str(full)],
            "health": "/health/liveness",
            "key": KEY,
        },
    }
    litellm_bin = PEER_VENV / "bin" / "litellm"
    if not skip_litellm and ensure_peer_venv():
        found["litellm"] = {
            "command": lambda port: [
                str(litellm_bin),
                "--config",
                str(peer),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--num_workers",
                "1",
                "--telemetry",
                "False",
            ],
            "health": "/health/liveliness",
            "ready_timeout": 180,
            "key": LITELLM_KEY,
        }
    return found


def ensure_peer_venv() -> bool:
    """LiteLLM proxy in a venv of its own (its [proxy] extra conflicts with the shared pins).

    Created on first use with pip from the package index; False (the target is skipped) when
    that fails, e.g. offline.
    """
    if (PEER_VENV / "bin" / "litellm").exists():
        return True
    print(f"== installing {PEER_REQUIREMENT} into {PEER_VENV} (first run only)", flush=True)
    try:
        subprocess.run([PY, "-m", "venv", str(PEER_VENV)], check=True, timeout=120)
        subprocess.run(
            [str(PEER_VENV / "bin" / "pip"), "install", "-q", PEER_REQUIREMENT],
            check=True,
            timeout=900,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        print(f"litellm proxy unavailable, skipped: {exc}", flush=True)
        return False
    return (PEER_VENV / "bin" / "litellm").exists()


def versions() -> dict[str, str | None]:
    names = [
        "genai-factory-llm-gateway",
        "starlette",
        "uvicorn",
        "aiohttp",
        "httpx",
        "orjson",
        "pydantic",
    ]
    found: dict[str, str | None] = {}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    pip_show = PEER_VENV / "bin" / "python"
    if pip_show.exists():
        out = subprocess.run(
            [str(pip_show), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
            capture_output=True,
            text=True,
            check=False,
        )
        found["litellm"] = out.stdout.strip() or None
    found["python"] = platform.python_version()
    return found


def machine() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "platform": platform.platform(),
        "cpu": cpu,
        "cpus_usable": len(os.sched_getaffinity(0)),
        "load_average_start": os.getloadavg(),
        "pinning": "server on core 0, load generator + upstream on core 1" if pin(0) else "none",
    }


def bench(args: argparse.Namespace) -> int:
    RESULTS.mkdir(exist_ok=True)
    before = machine()
    upstream_port = free_port()
    upstream = start([PY, str(HERE / "fast_upstream.py"), str(upstream_port)], core=1)
    upstream_url = f"http://127.0.0.1:{upstream_port}/v1"
    raw: dict[str, Any] = {}
    try:
        time.sleep(0.5)
        with tempfile.TemporaryDirectory() as tmp:
            found = targets(Path(tmp), upstream_url, args.skip_litellm)
            print(f"== direct ({upstream_url})", flush=True)
            raw["direct"] = {
                "load": [
                    load(f"{upstream_url}/chat/completions", c, args.seconds, False, None)
                    for c in (1, 16, 64)
                ]
                + [load(f"{upstream_url}/chat/completions", 16, args.seconds, True, None)]
                + [
                    load(
                        f"{upstream_url}/chat/completions",
                        16,
                        args.seconds,
                        False,
                        None,
                        OPEN_LOOP_RPS,
                    )
                ]
            }
            for name, target in found.items():
                print(f"== {name}", flush=True)
                try:
                    raw[name] = measure(target, args, f"{upstream_url}/chat/completions")
                except (RuntimeError, TimeoutError, subprocess.CalledProcessError) as exc:
                    print(f"{name} failed: {exc}", flush=True)
                    raw[name] = {"error": str(exc), "cold_start_s": [float("nan")]}
    finally:
        stop(upstream)
    result = {
        "name": "gateway",
        "machine": before | {"load_average_end": os.getloadavg()},
        "versions": versions(),
        "parameters": {
            "seconds_per_level": args.seconds,
            "concurrency": [1, 16, 64],
            "stream_concurrency": 16,
            "cold_start_runs": args.cold_starts,
            "open_loop_rps": OPEN_LOOP_RPS,
            "added_latency": "paired: minus the direct path measured right before the same level",
            "request": "non-streamed requests are chat completions with max_tokens 16, temperature 0.7",
        },
        "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "raw": raw,
        "summary": summarize(raw),
    }
    (RESULTS / "gateway.json").write_text(json.dumps(result, indent=2))
    print(table(result))
    print("\n".join(goals(result)))
    return 0


def measure(target: dict[str, Any], args: argparse.Namespace, direct_url: str) -> dict[str, Any]:
    """One target: cold starts, then the load levels on the last started process.

    The added latencies compare with the direct path measured right before the same level
    (paired), so both sides see the same load from the machine's other jobs.
    """
    cold: list[float] = []
    out: dict[str, Any] = {}
    for attempt in range(args.cold_starts):
        port = free_port()
        process = start(target["command"](port), core=0)
        try:
            cold.append(
                wait_ready(
                    f"http://127.0.0.1:{port}{target['health']}",
                    process,
                    target.get("ready_timeout", 60),
                )
            )
            if attempt < args.cold_starts - 1:
                continue
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            out["rss_idle_mib"] = rss_mib(process.pid)
            key = target.get("key")
            out["direct_c1"] = load(direct_url, 1, args.seconds, False, None)
            out["load"] = [
                load_measured(process.pid, url, c, args.seconds, False, key) for c in (1, 16, 64)
            ]
            out["load"].append(load_measured(process.pid, url, 16, args.seconds, True, key))
            out["direct_open_loop"] = load(direct_url, 16, args.seconds, False, None, OPEN_LOOP_RPS)
            out["load"].append(load(url, 16, args.seconds, False, key, OPEN_LOOP_RPS))
            out["rss_after_load_mib"] = rss_mib(process.pid)
        finally:
            stop(process)
    out["cold_start_s"] = cold
    return out


def _level(
    raw: dict[str, Any], name: str, concurrency: int, stream: bool = False
) -> dict[str, Any]:
    for row in raw.get(name, {}).get("load", []):
        if row["concurrency"] == concurrency and row["stream"] == stream and not row.get("rate"):
            return dict(row)
    return {}


def _open(raw: dict[str, Any], name: str) -> dict[str, Any]:
    for row in raw.get(name, {}).get("load", []):
        if row.get("rate"):
            return dict(row)
    return {}


def summarize(raw: dict[str, Any]) -> dict[str, Any]:
    direct = _level(raw, "direct", 1)
    direct_open = _open(raw, "direct")
    summary: dict[str, Any] = {}
    for name in raw:
        if name == "direct":
            continue
        c1 = _level(raw, name, 1)
        opened = _open(raw, name)
        # paired: the direct path measured just before this target's level, else the first one
        base_c1 = raw[name].get("direct_c1") or direct
        base_open = raw[name].get("direct_open_loop") or direct_open
        summary[name] = {
            "added_p50_ms_c1": round(c1.get("p50_ms", 0) - base_c1.get("p50_ms", 0), 3)
            if c1
            else None,
            "added_p99_ms_open_loop": round(opened["p99_ms"] - base_open["p99_ms"], 3)
            if opened.get("p99_ms") is not None and base_open.get("p99_ms") is not None
            else None,
            "rps_c16": _level(raw, name, 16).get("rps"),
            "cpu_ms_per_request_c16": _level(raw, name, 16).get("server_cpu_ms_per_request"),
            "cold_start_median_s": round(statistics.median(raw[name]["cold_start_s"]), 3),
            "rss_after_load_mib": raw[name].get("rss_after_load_mib"),
        }
    full = summary.get("gateway-full", {})
    for peer in ("litellm", "minimal"):
        other = summary.get(peer, {})
        if full.get("rps_c16") and other.get("rps_c16"):
            summary[f"full_vs_{peer}_rps_c16"] = round(full["rps_c16"] / other["rps_c16"], 2)
        if full.get("cpu_ms_per_request_c16") and other.get("cpu_ms_per_request_c16"):
            summary[f"full_vs_{peer}_cpu_efficiency_c16"] = round(
                other["cpu_ms_per_request_c16"] / full["cpu_ms_per_request_c16"], 2
            )
    return summary


def _fmt(value: Any) -> str:
    return "-" if value is None else str(value)


def table(result: dict[str, Any]) -> str:
    """The Markdown table of one run, every cell from the measured JSON."""
    raw, summary = result["raw"], result["summary"]
    lines = [
        "| target | rps c=1 | p50 ms c=1 | added p50 ms c=1 | rps c=16 | p99 ms c=16 | server CPU ms/req c=16 | rps c=64 | stream rps c=16 | stream TTFT p50 ms | p99 ms at 75 req/s | added p99 ms at 75 req/s | RSS MiB | cold start s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in raw:
        c1, c16, c64 = _level(raw, name, 1), _level(raw, name, 16), _level(raw, name, 64)
        stream, opened = _level(raw, name, 16, True), _open(raw, name)
        extra = summary.get(name, {})
        cells = [
            name,
            c1.get("rps"),
            c1.get("p50_ms"),
            extra.get("added_p50_ms_c1"),
            c16.get("rps"),
            c16.get("p99_ms"),
            c16.get("server_cpu_ms_per_request"),
            c64.get("rps"),
            stream.get("rps"),
            stream.get("ttft_p50_ms"),
            opened.get("p99_ms"),
            extra.get("added_p99_ms_open_loop"),
            extra.get("rss_after_load_mib"),
            extra.get("cold_start_median_s"),
        ]
        lines.append("| " + " | ".join(_fmt(c) for c in cells) + " |")
    return "\n".join(lines)


def _machine_line(machine: dict[str, Any]) -> str:
    start = ", ".join(f"{x:.1f}" for x in machine["load_average_start"])
    end = machine.get("load_average_end")
    during = f"; at the end {', '.join(f'{x:.1f}' for x in end)}" if end else ""
    return (
        f"{machine['cpu'] or 'unknown CPU'}, {machine['cpus_usable']} usable cores, "
        f"{machine['pinning']}; load average (1, 5, 15 min) at the start {start}{during}"
    )


def goals(result: dict[str, Any]) -> list[str]:
    """The issue's goals for the full default pipeline, each checked against this run."""
    summary = result["summary"]
    full = summary.get("gateway-full", {})

    def check(label: str, value: Any, goal: str, ok: bool | None) -> str:
        verdict = "n/a" if ok is None else ("met" if ok else "**missed**")
        return f"- {label}: {_fmt(value)} (goal {goal}): {verdict}"

    def ratio(key: str) -> Any:
        return summary.get(key)

    rows = [
        check(
            "throughput at c=16 vs LiteLLM proxy",
            f"{ratio('full_vs_litellm_rps_c16')}x" if ratio("full_vs_litellm_rps_c16") else None,
            ">= 10x",
            None
            if ratio("full_vs_litellm_rps_c16") is None
            else ratio("full_vs_litellm_rps_c16") >= 10,
        ),
        check(
            "throughput at c=16 vs minimal Starlette + httpx",
            f"{ratio('full_vs_minimal_rps_c16')}x" if ratio("full_vs_minimal_rps_c16") else None,
            ">= 2x",
            None
            if ratio("full_vs_minimal_rps_c16") is None
            else ratio("full_vs_minimal_rps_c16") >= 2,
        ),
        check(
            "added p50 latency at c=1",
            f"{full.get('added_p50_ms_c1')} ms"
            if full.get("added_p50_ms_c1") is not None
            else None,
            "< 1 ms",
            None if full.get("added_p50_ms_c1") is None else full["added_p50_ms_c1"] < 1,
        ),
        check(
            f"added p99 latency at a fixed {OPEN_LOOP_RPS:g} req/s",
            f"{full.get('added_p99_ms_open_loop')} ms"
            if full.get("added_p99_ms_open_loop") is not None
            else None,
            "< 3 ms",
            None
            if full.get("added_p99_ms_open_loop") is None
            else full["added_p99_ms_open_loop"] < 3,
        ),
        check(
            "resident memory after the load",
            f"{full.get('rss_after_load_mib')} MiB" if full.get("rss_after_load_mib") else None,
            "< 150 MiB",
            None if not full.get("rss_after_load_mib") else full["rss_after_load_mib"] < 150,
        ),
        check(
            "cold start (median)",
            f"{full.get('cold_start_median_s')} s" if full.get("cold_start_median_s") else None,
            "< 2 s",
            None if not full.get("cold_start_median_s") else full["cold_start_median_s"] < 2,
        ),
    ]
    cpu = [
        f"{peer} {summary[key]}x"
        for peer, key in (
            ("LiteLLM", "full_vs_litellm_cpu_efficiency_c16"),
            ("minimal", "full_vs_minimal_cpu_efficiency_c16"),
        )
        if summary.get(key)
    ]
    if cpu:
        rows.append("- server CPU per request at c=16, how many times less than: " + ", ".join(cpu))
    return rows


def readme_block(result: dict[str, Any], soak_result: dict[str, Any] | None) -> str:
    """The README's figures section, generated from results/*.json (no hand-typed number)."""
    versions = result["versions"]
    parameters = result["parameters"]
    lines = [
        f"Measured {result.get('measured_at', '')} on {_machine_line(result['machine'])}; "
        f"Python {versions.get('python')}, LiteLLM proxy {versions.get('litellm') or 'not run'} "
        f"without a database; {parameters['request']}; {parameters['seconds_per_level']} s per "
        f"level, open loop at {parameters.get('open_loop_rps', OPEN_LOOP_RPS):g} req/s; "
        "added latency is the target's minus the direct path's, measured right before it.",
        "",
        table(result),
        "",
        "Against the goals for the full default pipeline, in this run:",
        "",
        *goals(result),
    ]
    if soak_result is not None:
        samples = soak_result["raw"]["samples_s_mib"]
        lines += [
            f"- soak ({soak_result['parameters']['seconds']:g} s, full pipeline, plain and "
            f"streamed requests in turn, {soak_result['raw']['requests']} requests): resident "
            f"memory {samples[0][1] if samples else '-'} -> {samples[-1][1] if samples else '-'} "
            f"MiB, growth after warm-up {soak_result['growth_mib']} MiB (allowed "
            f"{soak_result['parameters']['allowed_growth_mib']:.1f}): {soak_result['verdict']}",
        ]
    return "\n".join(lines)


BLOCK_START = "<!-- bench:start (generated by benchmarks/run.py from benchmarks/results/*.json) -->"
BLOCK_END = "<!-- bench:end -->"


def update_readme(path: Path = README) -> bool:
    """Rewrite the README's figures block from the result files; False when it has none."""
    gateway_json = RESULTS / "gateway.json"
    if not gateway_json.exists():
        return False
    result = json.loads(gateway_json.read_text())
    soak_json = RESULTS / "soak.json"
    soak_result = json.loads(soak_json.read_text()) if soak_json.exists() else None
    text = path.read_text()
    if BLOCK_START not in text or BLOCK_END not in text:
        return False
    head, rest = text.split(BLOCK_START, 1)
    _, tail = rest.split(BLOCK_END, 1)
    path.write_text(
        head + BLOCK_START + "\n" + readme_block(result, soak_result) + "\n" + BLOCK_END + tail
    )
    return True


def soak(args: argparse.Namespace) -> int:
    """Load the full pipeline for a while; fail when resident memory keeps growing."""
    RESULTS.mkdir(exist_ok=True)
    upstream_port, port = free_port(), free_port()
    upstream = start([PY, str(HERE / "fast_upstream.py"), str(upstream_port)], core=1)
    samples: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "full.yaml"
        gateway_config(config, f"http://127.0.0.1:{upstream_port}/v1", full=True)
        process = start(
            [
                PY,
                "-m",
                "genai_factory.gateway",
                "serve",
                "--port",
                str(port),
                "--config",
                str(config),
            ],
            core=0,
        )
        try:
            wait_ready(f"http://127.0.0.1:{port}/health/liveness", process, 60)
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            started = time.monotonic()
            requests = 0
            while time.monotonic() - started < args.seconds:
                row = load(url, 16, 5, stream=len(samples) % 2 == 1, key=KEY)
                requests += row["requests"]
                samples.append((round(time.monotonic() - started, 1), rss_mib(process.pid)))
                print(
                    f"t={samples[-1][0]}s rss={samples[-1][1]} MiB requests={requests}", flush=True
                )
        finally:
            stop(process)
            stop(upstream)
    warm = samples[max(1, len(samples) // 4) - 1][1] if samples else 0.0
    end = max(s[1] for s in samples[-3:]) if samples else 0.0
    growth = end - warm
    allowed = max(8.0, 0.10 * warm)
    verdict = "pass" if growth <= allowed else "fail"
    (RESULTS / "soak.json").write_text(
        json.dumps(
            {
                "name": "soak",
                "machine": machine(),
                "versions": versions(),
                "parameters": {
                    "seconds": args.seconds,
                    "concurrency": 16,
                    "allowed_growth_mib": allowed,
                },
                "raw": {"samples_s_mib": samples, "requests": requests},
                "growth_mib": round(growth, 1),
                "verdict": verdict,
            },
            indent=2,
        )
    )
    print(
        f"soak: RSS {warm} -> {end} MiB after warm-up (growth {growth:.1f} MiB, allowed {allowed:.1f}): {verdict}"
    )
    return 0 if verdict == "pass" else 1


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "mode", nargs="?", default="all", choices=["all", "bench", "soak", "readme"]
    )
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--soak-seconds", type=float, default=90)
    parser.add_argument("--cold-starts", type=int, default=3)
    parser.add_argument("--skip-litellm", action="store_true")
    args = parser.parse_args()
    if args.mode == "readme":
        return 0 if update_readme() else 1
    with hold_lock():
        if args.mode == "soak":
            args.seconds = args.seconds or args.soak_seconds
            return soak(args)
        args.seconds = args.seconds or 4
        status = bench(args)
        if args.mode == "all":
            args.seconds = args.soak_seconds
            status = max(status, soak(args))
            print("README figures updated" if update_readme() else "README has no figures block")
        return status


@contextlib.contextmanager
def hold_lock() -> Any:
    """Hold /tmp/bench.lock (as ``flock /tmp/bench.lock``): benchmarks never overlap.

    ``GF_BENCH_LOCK_HELD=1`` says a caller already holds it (``flock ... python run.py``).
    """
    if os.environ.get("GF_BENCH_LOCK_HELD") == "1":
        yield
        return
    with LOCK.open("a") as handle:
        print(f"waiting for {LOCK}", flush=True)
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


if __name__ == "__main__":
    sys.exit(main())
