"""Shared pieces of the benchmarks: the binary, free ports, a running llamaproxy, result files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx

from llamaproxy.ports import free_port, free_ports  # noqa: F401  (bench_gateway's too)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def llama_server_binary() -> Path:
    out = subprocess.run(
        [sys.executable, "manage.py", "install_llama_server", "--print-path"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    return Path(out.stdout.strip().splitlines()[-1])


def wait_http(url: str, timeout: float = 60, headers: dict | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2, headers=headers).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} not ready within {timeout}s")


@dataclass
class RunningStack:
    proc: subprocess.Popen
    env: dict[str, str]
    api_port: int
    dashboard_port: int
    home: Path
    root: Path = ROOT  # the checkout it runs from

    def headers(self) -> dict[str, str]:
        return {"Authorization": "Bearer " + (self.home / "admin_token").read_text().strip()}

    def patch_model(self, name: str, body: dict) -> None:
        url = f"http://127.0.0.1:{self.dashboard_port}/api/manage/models/{name}"
        httpx.patch(url, json=body, headers=self.headers(), timeout=30).raise_for_status()

    def manage(self, *args: str) -> str:
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=self.root,
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout

    def poll(self) -> int | None:
        return self.proc.poll()

    def gateway_cpu_seconds(self) -> float | None:
        """User + system CPU time of the gateway (the daphne process serve started)."""
        import psutil

        try:
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                if "daphne" in " ".join(child.cmdline()):
                    times = child.cpu_times()
                    return times.user + times.system
        except psutil.Error:
            return None
        return None

    def terminate(self) -> None:
        self.stop()

    def wait(self, timeout: float | None = None) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=20)


def start_stack(work: Path, binary: Path, models: Path, root: Path = ROOT, **overrides: str) -> RunningStack:
    """`manage.py serve` of the checkout at `root` (another one's code runs with this one's
    virtualenv: its folder comes first on the import path), with its home in `work`."""
    names = ("DASHBOARD", "API", "OLLAMA", "LMSTUDIO")
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLAMAPROXY_") and k != "REDIS_URL"}
    env.update({f"LLAMAPROXY_{name}_PORT": str(port) for name, port in ports.items()})
    env.update(
        {
            "LLAMAPROXY_HOME": str(work / "home"),
            "LLAMAPROXY_LOG_DIR": str(work / "logs"),
            "LLAMAPROXY_MODELS_DIRS": str(models),
            "LLAMAPROXY_LLAMA_SERVER": str(binary),
            "LLAMAPROXY_ENV_FILE": str(work / "none.env"),
        }
    )
    env.update(overrides)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=root,
        env=env,
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [sys.executable, "manage.py", "scan_models"], cwd=root, env=env, check=True, capture_output=True
    )
    log = (work / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "serve"], cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    stack = RunningStack(proc, env, ports["API"], ports["DASHBOARD"], work / "home", root)
    wait_http(f"http://127.0.0.1:{ports['DASHBOARD']}/health")
    # Up to the end of serve's own start-up checks (a benchmark may pause the whole tree next).
    deadline = time.monotonic() + 60
    while b"Press Ctrl-C to stop." not in (work / "serve.log").read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"llamaproxy did not finish starting; see {work / 'serve.log'}")
        time.sleep(0.05)
    return stack


def write_results(name: str, results: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    results = {"benchmark": name, "when": datetime.now(UTC).isoformat(timespec="seconds"), **results}
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"results written to {path.relative_to(ROOT)}")
    return path
