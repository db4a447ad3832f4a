"""Process hygiene for runner processes: own process group, SIGTERM then SIGKILL, pid records.

Every runner the node agent starts is recorded in `<home>/run/runners/<pid>.json`, so that
`serve` stopping (or a restarted worker) can find and stop whatever is still alive.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import psutil
from django.conf import settings

log = logging.getLogger(__name__)


def records_dir() -> Path:
    path = settings.LLAMAPROXY_HOME / "run" / "runners"
    path.mkdir(parents=True, exist_ok=True)
    return path


def spawn(
    args: Sequence[str], log_path: Path, *, label: str, env: dict[str, str] | None = None
) -> subprocess.Popen:
    """Start a process in its own session (process group), output appended to log_path."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log_file:
        proc = subprocess.Popen(
            list(args),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
            close_fds=True,
        )
    record = {"pid": proc.pid, "label": label, "args": list(args), "started": _create_time(proc.pid)}
    (records_dir() / f"{proc.pid}.json").write_text(json.dumps(record))
    return proc


def _create_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def forget(pid: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        (records_dir() / f"{pid}.json").unlink()


def is_alive(pid: int, started: float | None = None) -> bool:
    """True while the process runs and is the one recorded (pids get reused)."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return started is None or abs(proc.create_time() - started) < 0.01
    except psutil.Error:
        return False


def terminate_group(pid: int, grace: float = 5.0, started: float | None = None) -> None:
    """SIGTERM the process group, wait up to `grace` seconds, then SIGKILL it."""
    if not is_alive(pid, started):
        forget(pid)
        return
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        forget(pid)
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    pause = 0.002  # most runners exit within milliseconds of SIGTERM: look soon, then back off
    while time.monotonic() < deadline:
        _reap(pid)
        if not is_alive(pid, started):
            break
        time.sleep(pause)
        pause = min(pause * 2, 0.05)
    else:
        log.warning("process %s ignored SIGTERM for %.1fs; killing it", pid, grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    _reap(pid)
    forget(pid)


def _reap(pid: int) -> None:
    # Our own children must be waited for, or they linger as zombies.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def recorded() -> list[dict]:
    records = []
    for file in records_dir().glob("*.json"):
        try:
            records.append(json.loads(file.read_text()))
        except (OSError, ValueError):
            file.unlink(missing_ok=True)
    return records


def stop_all_recorded(grace: float = 5.0) -> int:
    """Stop every recorded runner still alive; returns how many were stopped."""
    stopped = 0
    for record in recorded():
        pid, started = record["pid"], record.get("started")
        if is_alive(pid, started):
            terminate_group(pid, grace=grace, started=started)
            stopped += 1
        else:
            forget(pid)
    return stopped
