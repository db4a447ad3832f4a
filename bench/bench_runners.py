"""Runner benchmarks: what llamaproxy adds to a cold start and to a swap, against bare llama-server.

    .venv/bin/python bench/bench_runners.py [--rounds 7] [--size tiny|small]

Cold start: time from sending a streamed chat request for an unloaded model to its first token,
minus the time a bare llama-server (same file, same arguments) takes from spawn to a 200 on
/health. Both are medians over the rounds. The first token also needs prompt processing and one
decode step, which a bare /health does not; `warm_ttft_ms` (the same request to a ready model)
is reported so that `overhead_net_ms` = cold TTFT - bare start - warm TTFT can be read as well.

Swap: with one model allowed, the time of a request for B while A is loaded, against a bare
stop(A) (SIGTERM until exit) plus a bare start(B).

Results go to bench/results/runners.json. Needs the llama-server binary (LLAMAPROXY_LLAMA_SERVER
or `manage.py install_llama_server`); runs the real stack (`manage.py serve`) in a temp folder.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

BASE_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(BASE_DIR))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "llamaproxy.settings")

import django  # noqa: E402

django.setup()

from llamaproxy.ports import free_port  # noqa: E402
from models_catalog.tiny_model import write_tiny_model  # noqa: E402
from runners.provisioning import installed_binary  # noqa: E402
from tests.integration.conftest import Stack, stack_env  # noqa: E402

CHAT = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 1, "temperature": 0}


def bare_args(binary: Path, model: Path, name: str, port: int) -> list[str]:
    # The same list runners.arguments builds for a model without settings.
    return [
        str(binary),
        "-m",
        str(model),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--alias",
        name,
        "--metrics",
    ]


def bare_start(binary: Path, model: Path, name: str) -> tuple[float, subprocess.Popen]:
    """Seconds from spawn to /health 200, polling every 2 ms (as fast as a client could know)."""
    port = free_port()
    began = time.perf_counter()
    proc = subprocess.Popen(
        bare_args(binary, model, name, port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    with httpx.Client(timeout=1) as client:
        while True:
            try:
                if client.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    return time.perf_counter() - began, proc
            except httpx.HTTPError:
                pass
            if proc.poll() is not None:
                raise RuntimeError(f"bare llama-server exited with {proc.returncode}")
            time.sleep(0.002)


def bare_stop(proc: subprocess.Popen) -> float:
    began = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=10)
    return time.perf_counter() - began


def ttft(stack: Stack, model: str) -> float:
    body = {**CHAT, "model": model, "stream": True}
    began = time.perf_counter()
    with httpx.stream("POST", stack.url("api") + "/v1/chat/completions", json=body, timeout=120) as response:
        response.raise_for_status()
        first = None
        for line in response.iter_lines():
            if first is None and line.startswith("data:") and '"content"' in line:
                first = time.perf_counter() - began
    if first is None:
        raise RuntimeError("no token in the stream")
    return first


def manage(stack: Stack, method: str, path: str) -> None:
    response = httpx.request(
        method, stack.url("dashboard") + "/api/manage" + path, headers=stack.admin_headers(), timeout=120
    )
    response.raise_for_status()


def make_stack(root: Path, binary: Path, size: str, **env: str) -> Stack:
    env_vars, ports = stack_env(root, binary, **env)
    stack = Stack(root=root, env=env_vars, ports=ports)
    for seed, name in enumerate(("bench-a", "bench-b")):
        write_tiny_model(stack.models_dir / f"{name}.gguf", size=size, name=name, seed=seed)
    stack.home.mkdir(parents=True, exist_ok=True)
    (stack.home / "admin_token").write_text(secrets.token_urlsafe(32))
    stack.manage("migrate", "--noinput")
    stack.manage("scan_models")
    stack.start()
    return stack


def ms(values: list[float]) -> dict[str, float]:
    return {
        "median_ms": round(statistics.median(values) * 1000, 1),
        "min_ms": round(min(values) * 1000, 1),
        "max_ms": round(max(values) * 1000, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--size", choices=("tiny", "small"), default="tiny")
    options = parser.parse_args()
    binary = installed_binary("llama-server")
    if binary is None:
        sys.exit(
            "llama-server is not installed: run `manage.py install_llama_server` or set LLAMAPROXY_LLAMA_SERVER"
        )

    with tempfile.TemporaryDirectory(prefix="bench-runners-") as tmp:
        root = Path(tmp)
        stack = make_stack(root / "cold", binary, options.size, LLAMAPROXY_MAX_LOADED_MODELS="1")
        model_a = stack.models_dir / "bench-a.gguf"
        model_b = stack.models_dir / "bench-b.gguf"
        try:
            bare, cold, warm = [], [], []
            for _ in range(options.rounds):
                seconds, proc = bare_start(binary, model_a, "bench-a")
                bare.append(seconds)
                bare_stop(proc)
                manage(stack, "POST", "/runners/unload-all")
                cold.append(ttft(stack, "bench-a"))
                warm.append(ttft(stack, "bench-a"))

            swaps, bare_swaps = [], []
            for _ in range(options.rounds):
                manage(stack, "POST", "/runners/bench-a/load")
                body = {**CHAT, "model": "bench-b"}
                began = time.perf_counter()
                httpx.post(
                    stack.url("api") + "/v1/chat/completions", json=body, timeout=120
                ).raise_for_status()
                swaps.append(time.perf_counter() - began)
                manage(stack, "POST", "/runners/unload-all")
                _, proc_a = bare_start(binary, model_a, "bench-a")
                stop_seconds = bare_stop(proc_a)
                start_seconds, proc_b = bare_start(binary, model_b, "bench-b")
                bare_swaps.append(stop_seconds + start_seconds)
                bare_stop(proc_b)
        finally:
            stack.stop()

    cold_overhead = statistics.median(cold) - statistics.median(bare)
    results = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "model_size": options.size,
        "rounds": options.rounds,
        "cold_start": {
            "bare_start_to_healthy": ms(bare),
            "cold_ttft": ms(cold),
            "warm_ttft": ms(warm),
            "overhead_ms": round(cold_overhead * 1000, 1),
            "overhead_net_ms": round((cold_overhead - statistics.median(warm)) * 1000, 1),
            "target_ms": 50,
        },
        "swap": {
            "swap_total": ms(swaps),
            "bare_stop_plus_start": ms(bare_swaps),
            "overhead_ms": round((statistics.median(swaps) - statistics.median(bare_swaps)) * 1000, 1),
        },
    }
    out = BASE_DIR / "bench" / "results" / "runners.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
