"""The real stack for integration tests: `manage.py serve` with a temporary home and free ports."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from llamaproxy.ports import free_ports

BASE_DIR = Path(__file__).resolve().parents[2]
FACES = ("dashboard", "api", "ollama", "lmstudio")
PORT_VARIABLES = {
    "dashboard": "LLAMAPROXY_DASHBOARD_PORT",
    "api": "LLAMAPROXY_API_PORT",
    "ollama": "LLAMAPROXY_OLLAMA_PORT",
    "lmstudio": "LLAMAPROXY_LMSTUDIO_PORT",
}


_started: list[Stack] = []


@pytest.fixture(scope="session", autouse=True)
def _stop_every_stack() -> Iterator[None]:
    """Whatever a test or a failed fixture left running is stopped when the session ends."""
    yield
    for stack in _started:
        stack.stop()


@dataclass
class Stack:
    root: Path
    env: dict[str, str]
    ports: dict[str, int]
    proc: subprocess.Popen | None = None
    log_path: Path | None = None
    descendants: list[int] = field(default_factory=list)

    @property
    def home(self) -> Path:
        return Path(self.env["LLAMAPROXY_HOME"])

    @property
    def models_dir(self) -> Path:
        return Path(self.env["LLAMAPROXY_MODELS_DIRS"])

    @property
    def log_dir(self) -> Path:
        return Path(self.env["LLAMAPROXY_LOG_DIR"])

    def url(self, face: str = "api") -> str:
        return f"http://127.0.0.1:{self.ports[face]}"

    def admin_headers(self) -> dict[str, str]:
        token = (self.home / "admin_token").read_text().strip()
        return {"Authorization": f"Bearer {token}"}

    def manage(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=BASE_DIR,
            env=self.env,
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
        )

    def start(self, timeout: float = 60, expect_healthy: bool = True) -> None:
        self.log_path = self.root / "serve.log"
        log = self.log_path.open("wb")
        _started.append(self)
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "serve"],
            cwd=BASE_DIR,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                response = httpx.get(self.url("dashboard") + "/health", timeout=5)
                if response.status_code == 200 or (not expect_healthy and "components" in response.text):
                    return
                last = response.text
            except httpx.HTTPError as exc:
                last = str(exc)
            time.sleep(0.2)
        raise RuntimeError(f"serve not healthy within {timeout}s: {last}\n{self.log_tail()}")

    def all_processes(self) -> list[psutil.Process]:
        """serve and everything it started (runners are in their own sessions: found by env)."""
        found: dict[int, psutil.Process] = {}
        if self.proc is not None:
            try:
                parent = psutil.Process(self.proc.pid)
                found[parent.pid] = parent
                for child in parent.children(recursive=True):
                    found[child.pid] = child
            except psutil.Error:
                pass
        home = str(self.home)
        for proc in psutil.process_iter(["pid", "cmdline"]):
            try:
                cmdline = " ".join(proc.info["cmdline"] or [])
                if home in cmdline or str(self.models_dir) in cmdline:
                    found[proc.pid] = proc
            except psutil.Error:
                continue
        return list(found.values())

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int | None:
        if self.proc is None:
            return None
        self.descendants = [p.pid for p in self.all_processes()]
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # Never leave anything behind, even when a test failed half-way.
        for pid in self.descendants:
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).kill()
        return self.proc.returncode

    def prepare_catalog(self) -> None:
        """Before serve: the database migrated, the models folder scanned, and the manage API's
        token written (serve does not create it before the first local command)."""
        self.home.mkdir(parents=True, exist_ok=True)
        token = self.home / "admin_token"
        if not token.exists():
            token.write_text(secrets.token_urlsafe(32))
            token.chmod(0o600)
        self.manage("migrate", "--noinput")
        self.manage("scan_models")

    def usage_rows(self, **filters: str | int) -> list[dict]:
        """Usage history rows, newest first, through the manage API (filters as it takes them)."""
        response = httpx.get(
            self.url("dashboard") + "/api/manage/usage",
            params={"limit": 5000, **filters},
            headers=self.admin_headers(),
        )
        assert response.status_code == 200, response.text
        return response.json()["results"]

    def runner_log(self, model: str) -> Path:
        return self.log_dir / "runners" / f"{model}.log"

    def runner_log_size(self, model: str) -> int:
        path = self.runner_log(model)
        return path.stat().st_size if path.exists() else 0

    def slot_releases(self, model: str, offset: int) -> list[int]:
        """How far each task got (llama-server's `stop processing: n_tokens = N`) since `offset`."""
        with self.runner_log(model).open("rb") as handle:
            handle.seek(offset)
            return [int(n) for n in re.findall(rb"stop processing: n_tokens = (\d+)", handle.read())]

    def log_tail(self, lines: int = 60) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def stack_env(root: Path, llama_server: Path, **overrides: str) -> tuple[dict[str, str], dict[str, int]]:
    ports = dict(zip(FACES, free_ports(len(FACES)), strict=True))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLAMAPROXY_") and k != "REDIS_URL"}
    env.update(
        {
            "LLAMAPROXY_HOME": str(root / "home"),
            "LLAMAPROXY_LOG_DIR": str(root / "logs"),
            "LLAMAPROXY_MODELS_DIRS": str(root / "models"),
            "LLAMAPROXY_LLAMA_SERVER": str(llama_server),
            "LLAMAPROXY_ENV_FILE": str(root / "none.env"),
            # No test reaches the internet: these addresses refuse (test_downloads.py has stand-ins).
            "LLAMAPROXY_HF_ENDPOINT": "http://127.0.0.1:9",
            "LLAMAPROXY_OLLAMA_REGISTRY": "http://127.0.0.1:9",
            "PYTHONUNBUFFERED": "1",
        }
    )
    if "LLAMAPROXY_BUILD_CACHE" in os.environ:
        env["LLAMAPROXY_BUILD_CACHE"] = os.environ["LLAMAPROXY_BUILD_CACHE"]
    for face, port in ports.items():
        env[PORT_VARIABLES[face]] = str(port)
    env.update(overrides)
    for face in FACES:
        ports[face] = int(env[PORT_VARIABLES[face]])
    (root / "models").mkdir(parents=True, exist_ok=True)
    return env, ports


@pytest.fixture
def make_stack(
    tmp_path_factory: pytest.TempPathFactory, llama_server_binary: Path
) -> Iterator[Callable[..., Stack]]:
    """Factory: `make_stack(models={...}, LLAMAPROXY_MAX_LOADED_MODELS="2")` → a running Stack.

    `models` maps a file name in the stack's models folder to a callable writing it (or a Path to copy).
    """
    stacks: list[Stack] = []

    def factory(start: bool = True, setup: Callable[[Stack], None] | None = None, **overrides: str) -> Stack:
        root = tmp_path_factory.mktemp("stack")
        env, ports = stack_env(root, llama_server_binary, **overrides)
        stack = Stack(root=root, env=env, ports=ports)
        stacks.append(stack)
        if setup is not None:
            setup(stack)
        if start:
            stack.start()
        return stack

    yield factory
    for stack in stacks:
        stack.stop()


# --- catalog events, for tests that use the database directly (no stack) -------------------------


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch, settings: Any) -> list[dict[str, Any]]:
    """What the catalog publishes, as if the event bus were up."""
    settings.REDIS_EMBEDDED = False
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr("models_catalog.events.publish_sync", lambda event, groups=(): sent.append(event))
    return sent


@pytest.fixture
def quiet_events(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, Any]]]:
    """Catalog events are dropped; `settings.changed` events are collected for the tests to read."""
    from llamaproxy.runtime import invalidate_limits

    published: list[dict[str, Any]] = []
    monkeypatch.setattr("models_catalog.events.publish_sync", lambda event, groups=(): None)
    monkeypatch.setattr("llamaproxy.events.publish_sync", lambda event, groups=(): published.append(event))
    invalidate_limits()  # limits cached by an earlier test describe a database rolled back since
    yield published
    invalidate_limits()
