"""The gateway benchmark: side by side, one run, one machine.

Targets, each behind the same fast mock upstream (``fast_upstream.py``):
  direct        the load generator talks to the upstream itself (the floor)
  minimal       a minimal Starlette + httpx pass-through (``minimal_proxy.py``)
  gateway-bare  our gateway, every optional stage off (routing + failover only)
  gateway-full  our gateway, default pipeline: API-key auth, in-process rate limits (RPM + TPM),
                exact cache (requests are not cacheable: temperature 0.7), usage ledger, metrics
  litellm       LiteLLM proxy 1.106.2, no database (installed into benchmarks/.cache/litellm-venv)

The server under test is pinned to core 0, the load generator and the upstream to core 1
(``taskset``). Closed loop at concurrency 1, 16 and 64, a streaming run at 16, cold start (process
start to first healthy answer), and resident memory after the load.

Usage:
  python benchmarks/run.py [--seconds 4] [--skip-litellm]
  python benchmarks/run.py soak [--seconds 120]     # fails (exit 1) when memory keeps growing
Writes benchmarks/results/<name>.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
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
PEER_VENV = HERE / ".cache" / "litellm-venv"
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
    url: str, concurrency: int, seconds: float, stream: bool, key: str | None
) -> dict[str, Any]:
    command = [PY, str(HERE / "loadgen.py"), url, str(concurrency), str(seconds)]
    if stream:
        command.append("--stream")
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
    if not skip_litellm and litellm_bin.exists():
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
            }
            for name, target in found.items():
                print(f"== {name}", flush=True)
                try:
                    raw[name] = measure(target, args)
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
            "request": "chat, 16 max_tokens, temperature 0.7",
        },
        "raw": raw,
        "summary": summarize(raw),
    }
    (RESULTS / "gateway.json").write_text(json.dumps(result, indent=2))
    print(table(result))
    return 0


def measure(target: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
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
            out["load"] = [
                load_measured(process.pid, url, c, args.seconds, False, key) for c in (1, 16, 64)
            ]
            out["load"].append(load_measured(process.pid, url, 16, args.seconds, True, key))
            out["rss_after_load_mib"] = rss_mib(process.pid)
        finally:
            stop(process)
    out["cold_start_s"] = cold
    return out


def _level(
    raw: dict[str, Any], name: str, concurrency: int, stream: bool = False
) -> dict[str, Any]:
    for row in raw.get(name, {}).get("load", []):
        if row["concurrency"] == concurrency and row["stream"] == stream:
            return dict(row)
    return {}


def summarize(raw: dict[str, Any]) -> dict[str, Any]:
    direct = _level(raw, "direct", 1)
    summary: dict[str, Any] = {}
    for name in raw:
        if name == "direct":
            continue
        c1 = _level(raw, name, 1)
        summary[name] = {
            "added_p50_ms_c1": round(c1.get("p50_ms", 0) - direct.get("p50_ms", 0), 3)
            if c1
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


def table(result: dict[str, Any]) -> str:
    raw, summary = result["raw"], result["summary"]
    lines = [
        "| target | rps c=1 | p50 ms c=1 | added p50 ms c=1 | rps c=16 | p99 ms c=16 | server CPU ms/req c=16 | rps c=64 | stream rps c=16 | stream TTFT p50 ms | RSS MiB | cold start s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in raw:
        c1, c16, c64 = _level(raw, name, 1), _level(raw, name, 16), _level(raw, name, 64)
        stream = _level(raw, name, 16, True)
        extra = summary.get(name, {})
        lines.append(
            f"| {name} | {c1.get('rps')} | {c1.get('p50_ms')} | {extra.get('added_p50_ms_c1', '-')} | "
            f"{c16.get('rps')} | {c16.get('p99_ms')} | {c16.get('server_cpu_ms_per_request', '-')} | "
            f"{c64.get('rps')} | {stream.get('rps')} | "
            f"{stream.get('ttft_p50_ms')} | {extra.get('rss_after_load_mib', '-')} | "
            f"{extra.get('cold_start_median_s', '-')} |"
        )
    ratios = ", ".join(f"{k} = {v}" for k, v in summary.items() if k.startswith("full_vs"))
    machine_line = f"{result['machine']['cpu']} ({result['machine']['cpus_usable']} cores; {result['machine']['pinning']}; load average at start {result['machine']['load_average_start'][0]:.1f})"
    return "\n".join(lines) + f"\n\nRatios: {ratios or 'n/a'}. Machine: {machine_line}."


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
    parser.add_argument("mode", nargs="?", default="bench", choices=["bench", "soak"])
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--cold-starts", type=int, default=3)
    parser.add_argument("--skip-litellm", action="store_true")
    args = parser.parse_args()
    if args.mode == "soak":
        args.seconds = args.seconds or 120
        return soak(args)
    args.seconds = args.seconds or 4
    return bench(args)


if __name__ == "__main__":
    sys.exit(main())
