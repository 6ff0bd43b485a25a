"""Closed-loop load generator: C workers each send a request, wait for the whole answer, repeat.

Usage: python loadgen.py URL CONCURRENCY SECONDS [--stream] [--key KEY] [--rate RPS]
Prints one JSON object: requests, errors, rps, latency percentiles (ms), TTFT for streams.
With ``--rate`` it is an open loop instead: requests start at fixed intervals whatever the
answers do (CONCURRENCY only sizes the connection pool), and a latency counts from the moment
its request was due, so a server that falls behind shows it.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import aiohttp
import orjson

BODY = {
    "model": "bench",
    "messages": [{"role": "user", "content": "Write one short sentence about foxes."}],
    "max_tokens": 16,
    "temperature": 0.7,
}


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(
    url: str, concurrency: int, seconds: float, stream: bool, key: str | None, rate: float = 0.0
) -> dict:
    body = orjson.dumps(BODY | {"stream": stream})
    headers = {"content-type": "application/json"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    latencies: list[float] = []
    ttfts: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=concurrency + 4)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(due: float | None = None) -> None:
            nonlocal errors
            started = time.perf_counter() if due is None else due
            async with session.post(url, data=body, headers=headers) as response:
                if stream:
                    first = None
                    done = False
                    async for line in response.content:
                        if first is None and line.startswith(b"data: ") and b'"content":"w' in line:
                            first = time.perf_counter() - started
                        if line.startswith(b"data: [DONE]"):
                            done = True
                    if response.status != 200 or not done:
                        errors += 1
                        return
                    if first is not None:
                        ttfts.append(first)
                else:
                    await response.read()
                    if response.status != 200:
                        errors += 1
                        return
            latencies.append(time.perf_counter() - started)

        async def worker(deadline: float, record: bool) -> None:
            while time.perf_counter() < deadline:
                await one()

        # warm-up: open connections, fill caches; then measure
        await asyncio.gather(
            *(worker(time.perf_counter() + 0.5, False) for _ in range(concurrency))
        )
        latencies.clear()
        ttfts.clear()
        errors = 0
        started = time.perf_counter()
        deadline = started + seconds
        if rate:
            tasks = []
            for number in range(int(seconds * rate)):
                due = started + number / rate
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
                tasks.append(asyncio.create_task(one(due)))
            await asyncio.gather(*tasks)
        else:
            await asyncio.gather(*(worker(deadline, True) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {
        "rate": rate or None,
        "concurrency": concurrency,
        "stream": stream,
        "seconds": round(elapsed, 3),
        "requests": len(latencies),
        "errors": errors,
        "rps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 3),
        "p90_ms": round(percentile(latencies, 0.90) * 1000, 3),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 3),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 3) if latencies else None,
        "ttft_p50_ms": round(percentile(ttfts, 0.5) * 1000, 3) if ttfts else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("concurrency", type=int)
    parser.add_argument("seconds", type=float)
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--key")
    parser.add_argument("--rate", type=float, default=0.0, help="open loop: requests per second")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    result = asyncio.run(
        run(args.url, args.concurrency, args.seconds, args.stream, args.key, args.rate)
    )
    print(orjson.dumps(result).decode())


if __name__ == "__main__":
    main()
