"""What `manage.py serve` runs: embedded Redis, the Celery worker with beat, and daphne.

Each child gets its own process group (a terminal's Ctrl-C reaches only us, so we stop them
in order) and dies with us if we are killed outright (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from django.conf import settings

from llamaproxy.config import PORT_VARIABLES
from llamaproxy.redis_server import redis_args, wait_until_ready

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    name: str
    proc: subprocess.Popen
    stop_signal: int = signal.SIGTERM
    grace: float = 4.0


@dataclass
class Supervisor:
    debug: bool = False
    children: list[Child] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))

    # --- start -----------------------------------------------------------------------------
    def start_child(
        self, name: str, args: list[str], *, stop_signal: int = signal.SIGTERM, grace: float = 4.0
    ) -> Child:
        env = dict(self.env, LLAMAPROXY_PROCESS=name)
        proc = subprocess.Popen(args, env=env, start_new_session=True, preexec_fn=_die_with_parent)
        child = Child(name, proc, stop_signal, grace)
        self.children.append(child)
        return child

    def start_redis(self) -> None:
        socket_path: Path = settings.REDIS_SOCKET
        socket_path.unlink(missing_ok=True)
        child = self.start_child(
            "redis",
            redis_args(socket_path, settings.LLAMAPROXY_HOME, settings.LOG_DIR / "redis.log"),
            grace=2.0,
        )
        wait_until_ready(settings.REDIS_URL, child.proc)

    def start_worker(self) -> None:
        args = [
            sys.executable, "-m", "celery", "-A", "llamaproxy", "worker", "--beat",
            "--pool", "threads", "--concurrency", "8",
            "--hostname", f"llamaproxy@{socket.gethostname()}",
            "--queues", f"{settings.CELERY_TASK_DEFAULT_QUEUE},{node_queue()}",
            "--schedule", settings.CELERY_BEAT_SCHEDULE_FILENAME,
            "--without-mingle", "--without-gossip",
            "--loglevel", "DEBUG" if self.debug else "WARNING",
        ]  # fmt: skip
        self.start_child("worker", args, grace=5.0)

    def start_gateway(self) -> None:
        args = [sys.executable, "-m", "llamaproxy.daphne_main", "-v", "2" if self.debug else "1"]
        for port in settings.CONFIG.enabled_faces().values():
            args += ["-e", f"tcp:port={port}:interface={_twisted_interface(settings.LLAMAPROXY_HOST)}"]
        args.append("llamaproxy.asgi:application")
        self.start_child("gateway", args, grace=3.0)

    def wait_for_gateway(self, timeout: float = 30.0) -> tuple[int, dict]:
        """Poll /health on the first enabled port until the gateway answers (any status)."""
        _face, port = next(iter(settings.CONFIG.enabled_faces().items()))
        url = f"http://{_url_host(settings.LLAMAPROXY_HOST)}:{port}/health"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.raise_if_child_died()
            try:
                response = httpx.get(url, timeout=5)
                if response.status_code == 200:
                    return 200, response.json()
                body = response.json()
                # The worker needs a moment for its first heartbeat; keep waiting for it.
                if set(body.get("failing", [])) - {"worker"} or time.monotonic() > deadline - 1:
                    return response.status_code, body
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the gateway did not answer {url} within {timeout:.0f}s")

    def raise_if_child_died(self) -> None:
        for child in self.children:
            if child.proc.poll() is not None:
                raise ChildDied(child.name, child.proc.returncode)

    # --- stop ------------------------------------------------------------------------------
    def stop_all(self) -> None:
        """Gateway first (no new requests), then the worker (it stops its runners), then any runner
        still recorded (a worker that died hard leaves them), then Redis."""
        from runners.process import stop_all_recorded

        order = {"gateway": 0, "worker": 1, "redis": 3}
        swept = False
        for child in sorted(self.children, key=lambda c: order.get(c.name, 2)):
            if order.get(child.name, 2) > 1 and not swept:
                stop_all_recorded(grace=2.0)
                swept = True
            _stop_child(child)
        if not swept:
            stop_all_recorded(grace=2.0)
        self.children.clear()


class ChildDied(RuntimeError):
    def __init__(self, name: str, code: int) -> None:
        super().__init__(f"the {name} process exited unexpectedly with status {code}")
        self.name = name
        self.code = code


def _stop_child(child: Child) -> None:
    proc = child.proc
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, child.stop_signal)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=child.grace)
    # Whatever is left in the group (the worker's pool threads, a stuck child) goes now.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=2)


def node_queue() -> str:
    """The queue of this machine's node agent: runner tasks for its processes go there."""
    return f"node.{socket.gethostname()}"


def _twisted_interface(host: str) -> str:
    return host.replace(":", r"\:")


def _url_host(host: str) -> str:
    if host in {"0.0.0.0", "::"}:
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def face_urls() -> dict[str, str]:
    host = _url_host(settings.LLAMAPROXY_HOST)
    return {face: f"http://{host}:{port}" for face, port in settings.CONFIG.enabled_faces().items()}


def busy_ports() -> list[str]:
    """Enabled ports something else already listens on, each named with its variable."""
    problems = []
    for face, port in settings.CONFIG.enabled_faces().items():
        family = socket.AF_INET6 if ":" in settings.LLAMAPROXY_HOST else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((settings.LLAMAPROXY_HOST, port))
            except OSError as exc:
                problems.append(f"port {port} ({PORT_VARIABLES[face]}) is not free: {exc.strerror}")
    return problems
