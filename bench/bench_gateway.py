"""Gateway overhead: direct llama-server vs llamaproxy vs llama.cpp's router mode, one run.
A bare TCP relay (bench/tcp_relay.py) in front of its own llama-server is measured too, as the
yardstick: what one more process in the path costs on this machine before any work is done.

- added latency p50/p99 of short non-streamed completions (target: p50 ≤ 1 ms over direct)
- streamed tokens/s at 1, 8 and 64 concurrent streams (target: ≥ 98% of direct)

All four run at once, but only the one being measured runs (the others are SIGSTOPped). The
measurements are taken one at a time: each contender in turn (the order rotated each round) takes the
same measurement before the next one starts, so a slow spell of a shared machine falls on all of
them alike. Latency percentiles are over every round's samples; a stream ratio is the median of
the rounds' ratios (each round's two rates were measured a minute apart at most).

With `--compare REF`, a fifth contender is llamaproxy as of the git commit REF (a temporary
worktree run with this virtualenv), measured in the same interleaved rounds: an A/B of a change
to the gateway, its CPU per request and per token beside this checkout's. `--contenders` picks
some (direct always runs: the ratios are to it).

Usage: .venv/bin/python bench/bench_gateway.py [--requests 200] [--tokens 256] [--rounds 3]
           [--concurrency 1,8,64] [--compare REF] [--contenders direct,llamaproxy,...]
Writes bench/results/gateway.json (not with --compare or --contenders: an A/B run, or a part
of one, is not the benchmark's result) and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "llamaproxy.settings")

from bench.common import (  # noqa: E402
    RunningStack,
    free_port,
    llama_server_binary,
    start_stack,
    wait_http,
    write_results,
)
from llamaproxy import gpu  # noqa: E402

MODEL = "bench-small"
CONTENDERS = ("direct", "tcp_relay", "llamaproxy", "llama_router")
PARALLEL = 64  # llama-server slots, the same for every contender
CTX_SIZE = 32768  # 512 tokens per slot
STREAMED_TOKENS = 4096  # streamed per concurrency level and round, at least


# A keep-alive connection the server (or the relay in front of it) closed just as it was reused:
# clients send once more then, as the openai SDK does.
CLOSED_UNDER_US = (httpx.RemoteProtocolError, httpx.ReadError)


async def post(client: httpx.AsyncClient, url: str, body: dict) -> httpx.Response:
    """llama-server may close a keep-alive connection as it is reused: send once more then."""
    try:
        return await client.post(url, json=body)
    except CLOSED_UNDER_US:
        return await client.post(url, json=body)


async def latency(
    url: str, model: str, requests: int, cpu: Callable[[], float | None] | None = None
) -> tuple[list[float], float | None]:
    """Timings of `requests` one-token completions after a warm-up, and with `cpu` (a process's
    CPU seconds) the CPU that process spent on them (the warm-up left out)."""
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
        after = cpu() if cpu else None
    spent = after - before if before is not None and after is not None else None
    return samples, spent


async def stream_rate(url: str, model: str, streams: int, tokens: int, at_least: int) -> tuple[float, int]:
    """Total tokens/s across `streams` concurrent streamed completions of `tokens` tokens each,
    in as many batches as it takes to stream `at_least` tokens (a single stream of a few hundred
    tokens is over too soon to time). Also returns how many tokens were streamed, warm-up
    included (for the CPU cost per token)."""
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
            except CLOSED_UNDER_US:
                if attempt == 2 or count:
                    raise
        return 0

    limits = httpx.Limits(max_connections=streams + 4)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        streamed = await one(client)  # warm-up
        total = 0
        began = time.perf_counter()
        while total < at_least:
            total += sum(await asyncio.gather(*(one(client) for _ in range(streams))))
        elapsed = time.perf_counter() - began
    return total / elapsed, streamed + total


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def process_tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


class Contender:
    """One server under test. Only the one being measured runs: the others are stopped with
    SIGSTOP (whole process trees), so idle services take nothing from it."""

    def __init__(
        self,
        name: str,
        url: str,
        model: str,
        pids: list[int],
        cpu: Callable[[], float | None] | None = None,
    ):
        self.name, self.url, self.model, self.pids, self.cpu = name, url, model, pids, cpu

    def pause(self) -> None:
        for pid in self.pids:
            for proc in process_tree(pid):
                with contextlib.suppress(psutil.Error):
                    proc.suspend()

    def resume(self) -> None:
        for pid in reversed(self.pids):
            for proc in reversed(process_tree(pid)):  # children first: the parent finds them running
                with contextlib.suppress(psutil.Error):
                    proc.resume()


async def measure(contender: Contender, what: str, requests: int, tokens: int, into: dict) -> None:
    """One measurement, added to `into`: `latency` (short completions) or `streams:N`, and with
    `cpu` (the gateway's CPU seconds) its CPU cost per request or per streamed token: the
    overhead itself, which timings on a busy 2-core machine show only through noise."""
    cost = into.setdefault("cpu", {"seconds": 0.0, "requests": 0, "tokens": {}})
    cpu = contender.cpu
    if what == "latency":
        samples, spent = await latency(contender.url, contender.model, requests, cpu)
        into.setdefault("samples", []).extend(samples)
        if spent is not None:
            cost["seconds"] += spent
            cost["requests"] += requests
        return
    streams = int(what.split(":")[1])
    before = cpu() if cpu else None
    rate, streamed = await stream_rate(contender.url, contender.model, streams, tokens, STREAMED_TOKENS)
    into.setdefault("rates", {}).setdefault(str(streams), []).append(rate)
    if cpu and before is not None and (after := cpu()) is not None:
        spent = cost["tokens"].setdefault(str(streams), [0.0, 0])
        spent[0] += after - before
        spent[1] += streamed


def summarize(into: dict) -> dict:
    samples = into["samples"]
    result: dict = {
        "latency_ms": {
            "p50": percentile(samples, 0.5),
            "p99": percentile(samples, 0.99),
            "mean": statistics.mean(samples),
        },
        "stream_tokens_per_second": {s: statistics.median(r) for s, r in into["rates"].items()},
        "stream_tokens_per_second_rounds": into["rates"],
    }
    cost = into["cpu"]
    if cost["requests"]:
        result["gateway_cpu"] = {
            "per_request_us": cost["seconds"] / cost["requests"] * 1e6,
            "per_streamed_token_us": {s: sec / n * 1e6 for s, (sec, n) in cost["tokens"].items()},
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200, help="short completions per round")
    parser.add_argument("--tokens", type=int, default=256, help="tokens per streamed completion")
    parser.add_argument("--concurrency", default="1,8,64")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (medians are reported)")
    parser.add_argument("--compare", metavar="REF", help="also measure llamaproxy as of this git commit")
    parser.add_argument("--contenders", help=f"comma-separated, of {', '.join(CONTENDERS)} (default: all)")
    args = parser.parse_args()
    concurrency = [int(c) for c in args.concurrency.split(",")]
    wanted = set(args.contenders.split(",")) if args.contenders else set(CONTENDERS)
    if unknown := wanted - set(CONTENDERS):
        parser.error(f"unknown contenders: {', '.join(sorted(unknown))}")
    wanted.add("direct")
    baseline_name = f"llamaproxy@{args.compare}" if args.compare else None

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
    model_args = ["--ctx-size", str(CTX_SIZE), "--parallel", str(PARALLEL)]
    results: dict = {
        "machine": platform.node(),
        "cpus": os.cpu_count(),
        "model": "small (60M Q8_0)",
        "gpus": [g.name for g in gpu.gpus() or []],
        "tokens": args.tokens,
        "rounds": args.rounds,
    }
    processes: list[subprocess.Popen | RunningStack] = []
    contenders: list[Contender] = []
    worktree: Path | None = None
    try:

        def llama_server(*model_source: str) -> tuple[subprocess.Popen, int]:
            """llama-server with the shared arguments and `model_source` (`-m FILE` or
            `--models-dir DIR`), once it answers /health; returns it and its port."""
            port = free_port()
            proc = subprocess.Popen(
                [str(binary), *model_source, "--host", "127.0.0.1", "--port", str(port), *model_args],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            processes.append(proc)
            wait_http(f"http://127.0.0.1:{port}/health")
            return proc, port

        model_file = str(models / f"{MODEL}.gguf")
        direct, port = llama_server("-m", model_file)
        contenders.append(Contender("direct", f"http://127.0.0.1:{port}", MODEL, [direct.pid]))

        if "tcp_relay" in wanted:
            behind_relay, target_port = llama_server("-m", model_file)
            port = free_port()
            relay = subprocess.Popen(
                [sys.executable, str(ROOT / "bench" / "tcp_relay.py"), str(port), str(target_port)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            processes.append(relay)
            wait_http(f"http://127.0.0.1:{port}/health")
            contenders.append(
                Contender("tcp_relay", f"http://127.0.0.1:{port}", MODEL, [relay.pid, behind_relay.pid])
            )

        def llamaproxy(name: str, home: Path, root: Path = ROOT) -> None:
            home.mkdir(exist_ok=True)
            stack = start_stack(home, binary, models, root)
            processes.append(stack)
            stack.patch_model(MODEL, {"parameters": {"ctx_size": CTX_SIZE, "parallel": PARALLEL}})
            url = f"http://127.0.0.1:{stack.api_port}"
            contenders.append(Contender(name, url, MODEL, [stack.proc.pid], stack.gateway_cpu_seconds))

        if "llamaproxy" in wanted:
            llamaproxy("llamaproxy", work)
        if args.compare:
            worktree = work / "baseline-checkout"
            subprocess.run(
                ["git", "worktree", "add", "--detach", str(worktree), args.compare],
                cwd=ROOT,
                check=True,
                capture_output=True,
            )
            llamaproxy(baseline_name, work / "baseline", worktree)

        if "llama_router" in wanted:
            router, port = llama_server("--models-dir", str(models))
            contenders.append(Contender("llama_router", f"http://127.0.0.1:{port}", MODEL, [router.pid]))

        collected: dict[str, dict] = {c.name: {} for c in contenders}
        failed: dict[str, str] = {}
        for contender in contenders:
            contender.pause()
        # Measurement by measurement, every contender in turn (a different order each round), so
        # that the figures compared were taken within a minute of each other.
        measurements = ["latency", *(f"streams:{streams}" for streams in concurrency)]
        for what in measurements:
            for round_no in range(args.rounds):
                order = contenders[round_no % len(contenders) :] + contenders[: round_no % len(contenders)]
                for contender in order:
                    if contender.name in failed:
                        continue
                    contender.resume()
                    try:
                        asyncio.run(
                            measure(contender, what, args.requests, args.tokens, collected[contender.name])
                        )
                    except httpx.HTTPError as exc:
                        if contender.name in ("llama_router", "tcp_relay"):  # optional: report, go on
                            failed[contender.name] = str(exc) or type(exc).__name__
                        else:
                            raise
                    finally:
                        contender.pause()
            print(f"{what}: {args.rounds} rounds measured", flush=True)
        for contender in contenders:
            contender.resume()
            if contender.name in failed:
                results[contender.name] = {"error": failed[contender.name]}
            else:
                results[contender.name] = summarize(collected[contender.name])
    finally:
        for contender in contenders:
            contender.resume()
        for proc in processes:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=20)
        if worktree is not None:
            subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=ROOT, check=False)

    direct_result = results["direct"]
    summary = {}
    for name in names(results):
        if "latency_ms" not in results.get(name, {}):
            continue
        entry = results[name]
        # Each round's ratio (the two rates of a round were measured back to back), and their median.
        round_ratios = {
            streams: [
                mine / theirs
                for mine, theirs in zip(
                    entry["stream_tokens_per_second_rounds"][streams], rounds, strict=False
                )
            ]
            for streams, rounds in direct_result["stream_tokens_per_second_rounds"].items()
        }
        summary[name] = {
            "added_p50_ms": entry["latency_ms"]["p50"] - direct_result["latency_ms"]["p50"],
            "added_p99_ms": entry["latency_ms"]["p99"] - direct_result["latency_ms"]["p99"],
            "stream_ratio": {streams: statistics.median(ratios) for streams, ratios in round_ratios.items()},
            "stream_ratio_rounds": round_ratios,
        }
    results["summary"] = summary
    if args.compare or args.contenders:
        print("an A/B run or a part of the benchmark: bench/results/gateway.json left as it was")
    else:
        write_results("gateway", results)
    print_table(results)


def names(results: dict) -> list[str]:
    """The contenders other than direct that were measured, in the table's order."""
    order = [
        "llamaproxy",
        *sorted(k for k in results if k.startswith("llamaproxy@")),
        "llama_router",
        "tcp_relay",
    ]
    return [name for name in order if name in results]


def print_table(results: dict) -> None:
    print(
        f"\n{'':16} {'p50 ms':>8} {'p99 ms':>8}"
        + "".join(f" {f'{s} streams':>12}" for s in results["direct"]["stream_tokens_per_second"])
    )
    for name in ("direct", *names(results)):
        entry = results.get(name, {})
        if "latency_ms" not in entry:
            print(f"{name:16} {entry.get('error', 'not measured')}")
            continue
        rates = "".join(f" {rate:>10.0f}/s" for rate in entry["stream_tokens_per_second"].values())
        print(f"{name:16} {entry['latency_ms']['p50']:>8.2f} {entry['latency_ms']['p99']:>8.2f}{rates}")
    for name in names(results):
        cost = results[name].get("gateway_cpu")
        if not cost:
            continue
        per_token = ", ".join(f"{s}: {us:.0f} µs" for s, us in cost.get("per_streamed_token_us", {}).items())
        print(
            f"{name} gateway CPU: {cost.get('per_request_us', 0):.0f} µs per request; per streamed token {per_token}"
        )
    for name, summary in results["summary"].items():
        spread = summary.get("stream_ratio_rounds", {})
        ratios = ", ".join(
            f"{s}: {r:.1%}" + (f" ({min(spread[s]):.1%} to {max(spread[s]):.1%})" if spread.get(s) else "")
            for s, r in summary["stream_ratio"].items()
        )
        print(
            f"{name}: added p50 {summary['added_p50_ms']:+.2f} ms, p99 {summary['added_p99_ms']:+.2f} ms; stream ratio {ratios}"
        )


if __name__ == "__main__":
    main()
