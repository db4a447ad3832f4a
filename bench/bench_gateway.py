"""Gateway overhead: direct llama-server vs llamaproxy vs llama.cpp's router mode, one run.

- added latency p50/p99 of short non-streamed completions (target: p50 ≤ 1 ms over direct)
- streamed tokens/s at 1, 8 and 64 concurrent streams (target: ≥ 98% of direct)

Usage: .venv/bin/python bench/bench_gateway.py [--requests 200] [--tokens 64]
Writes bench/results/gateway.json and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "llamaproxy.settings")

from bench.common import free_port, llama_server_binary, start_stack, wait_http, write_results  # noqa: E402
from llamaproxy import gpu  # noqa: E402

MODEL = "bench-small"
PARALLEL = 64  # llama-server slots, the same for every contender


async def post(client: httpx.AsyncClient, url: str, body: dict) -> httpx.Response:
    """llama-server may close a keep-alive connection as it is reused: send once more then."""
    try:
        return await client.post(url, json=body)
    except httpx.RemoteProtocolError:
        return await client.post(url, json=body)


async def latency(
    url: str,
    model: str,
    requests: int,
    cost: dict | None = None,
    cpu: Callable[[], float | None] | None = None,
) -> list[float]:
    body = {"model": model, "prompt": "Hello", "max_tokens": 1, "temperature": 0}
    samples = []
    async with httpx.AsyncClient(timeout=60) as client:
        for _ in range(10):  # warm-up: connections, caches
            (await post(client, url + "/v1/completions", body)).raise_for_status()
        before = cpu() if cpu else None
        for _ in range(requests):
            began = time.perf_counter()
            response = await post(client, url + "/v1/completions", body)
            samples.append((time.perf_counter() - began) * 1000)
            response.raise_for_status()
        if cpu and cost is not None and before is not None and (after := cpu()) is not None:
            cost["per_request_us"] = (after - before) / requests * 1e6
    return samples


async def stream_rate(url: str, model: str, streams: int, tokens: int) -> float:
    """Total tokens/s across `streams` concurrent streamed completions of `tokens` tokens each."""
    body = {"model": model, "prompt": "Tell me", "max_tokens": tokens, "stream": True, "ignore_eos": True}

    async def one(client: httpx.AsyncClient) -> int:
        for attempt in (1, 2):
            count = 0
            try:
                async with client.stream("POST", url + "/v1/completions", json=body) as response:
                    response.raise_for_status()
                    async for line in response.aiter_lines():
                        if line.startswith("data: ") and line != "data: [DONE]":
                            count += 1
                return count
            except httpx.RemoteProtocolError:
                if attempt == 2 or count:
                    raise
        return 0

    limits = httpx.Limits(max_connections=streams + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        await one(client)  # warm-up
        began = time.perf_counter()
        counts = await asyncio.gather(*(one(client) for _ in range(streams)))
        elapsed = time.perf_counter() - began
    return sum(counts) / elapsed


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(
    url: str,
    model: str,
    requests: int,
    tokens: int,
    concurrency: list[int],
    cpu: Callable[[], float | None] | None = None,
) -> dict:
    """Latency and stream rates; with `cpu` (the gateway's CPU seconds), its CPU cost per
    request and per streamed token too: the overhead itself, which timings on a busy 2-core
    machine show only through noise."""
    cost: dict = {}
    samples = await latency(url, model, requests, cost, cpu)
    result = {
        "latency_ms": {
            "p50": percentile(samples, 0.5),
            "p99": percentile(samples, 0.99),
            "mean": statistics.mean(samples),
        },
        "stream_tokens_per_second": {},
    }
    for streams in concurrency:
        before = cpu() if cpu else None
        result["stream_tokens_per_second"][str(streams)] = await stream_rate(url, model, streams, tokens)
        if cpu and before is not None and (after := cpu()) is not None:
            # stream_rate runs one warm-up stream, then `streams` streams of `tokens` tokens.
            cost.setdefault("per_streamed_token_us", {})[str(streams)] = (
                (after - before) / ((streams + 1) * tokens) * 1e6
            )
    if cost:
        result["gateway_cpu"] = cost
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--concurrency", default="1,8,64")
    args = parser.parse_args()
    concurrency = [int(c) for c in args.concurrency.split(",")]

    binary = llama_server_binary()
    work = Path(tempfile.mkdtemp(prefix="llamaproxy-bench-"))
    models = work / "models"
    models.mkdir()
    subprocess.run(
        [
            sys.executable,
            "manage.py",
            "make_tiny_model",
            str(models / f"{MODEL}.gguf"),
            "--size",
            "small",
            "--name",
            MODEL,
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    model_args = ["--ctx-size", "8192", "--parallel", str(PARALLEL)]
    results: dict = {
        "machine": platform.node(),
        "cpus": os.cpu_count(),
        "model": "small (60M Q8_0)",
        "gpus": [g.name for g in gpu.gpus() or []],
        "tokens": args.tokens,
    }
    processes: list[subprocess.Popen] = []
    try:
        port = free_port()
        direct = subprocess.Popen(
            [
                str(binary),
                "-m",
                str(models / f"{MODEL}.gguf"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                *model_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        processes.append(direct)
        wait_http(f"http://127.0.0.1:{port}/health")
        results["direct"] = asyncio.run(
            measure(f"http://127.0.0.1:{port}", MODEL, args.requests, args.tokens, concurrency)
        )
        direct.terminate()
        direct.wait()

        stack = start_stack(work, binary, models)
        processes.append(stack)
        api = f"http://127.0.0.1:{stack.api_port}"
        stack.patch_model(MODEL, {"parameters": {"ctx_size": 8192, "parallel": PARALLEL}})
        results["llamaproxy"] = asyncio.run(
            measure(api, MODEL, args.requests, args.tokens, concurrency, cpu=stack.gateway_cpu_seconds)
        )
        stack.stop()

        port = free_port()
        router = subprocess.Popen(
            [
                str(binary),
                "--models-dir",
                str(models),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                *model_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        processes.append(router)
        wait_http(f"http://127.0.0.1:{port}/health")
        try:
            results["llama_router"] = asyncio.run(
                measure(f"http://127.0.0.1:{port}", MODEL, args.requests, args.tokens, concurrency)
            )
        except httpx.HTTPError as exc:
            results["llama_router"] = {"error": str(exc)}
    finally:
        for proc in processes:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=15)

    direct_result = results["direct"]
    summary = {}
    for name in ("llamaproxy", "llama_router"):
        if "latency_ms" not in results.get(name, {}):
            continue
        entry = results[name]
        summary[name] = {
            "added_p50_ms": entry["latency_ms"]["p50"] - direct_result["latency_ms"]["p50"],
            "added_p99_ms": entry["latency_ms"]["p99"] - direct_result["latency_ms"]["p99"],
            "stream_ratio": {
                streams: entry["stream_tokens_per_second"][streams]
                / direct_result["stream_tokens_per_second"][streams]
                for streams in direct_result["stream_tokens_per_second"]
            },
        }
    results["summary"] = summary
    write_results("gateway", results)
    print_table(results)


def print_table(results: dict) -> None:
    print(
        f"\n{'':16} {'p50 ms':>8} {'p99 ms':>8}"
        + "".join(f" {f'{s} streams':>12}" for s in results["direct"]["stream_tokens_per_second"])
    )
    for name in ("direct", "llamaproxy", "llama_router"):
        entry = results.get(name, {})
        if "latency_ms" not in entry:
            print(f"{name:16} {entry.get('error', 'not measured')}")
            continue
        rates = "".join(f" {rate:>10.0f}/s" for rate in entry["stream_tokens_per_second"].values())
        print(f"{name:16} {entry['latency_ms']['p50']:>8.2f} {entry['latency_ms']['p99']:>8.2f}{rates}")
    cost = results.get("llamaproxy", {}).get("gateway_cpu")
    if cost:
        per_token = ", ".join(f"{s}: {us:.0f} µs" for s, us in cost.get("per_streamed_token_us", {}).items())
        print(
            f"gateway CPU: {cost.get('per_request_us', 0):.0f} µs per request; per streamed token {per_token}"
        )
    for name, summary in results["summary"].items():
        ratios = ", ".join(f"{s}: {r:.1%}" for s, r in summary["stream_ratio"].items())
        print(
            f"{name}: added p50 {summary['added_p50_ms']:+.2f} ms, p99 {summary['added_p99_ms']:+.2f} ms; stream ratio {ratios}"
        )


if __name__ == "__main__":
    main()
