"""The node agent's work: start, stop and watch the runner processes of this machine.

Sync code run by thin Celery tasks (runners.tasks) in the worker. Each step claims its row with
a conditional update, records what happened in the database, then publishes a `runner.state`
event to the scheduler and the dashboards.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from django.conf import settings
from django.db import IntegrityError, close_old_connections
from django.utils import timezone

from llamaproxy import gpu, ports
from llamaproxy.events import SCHEDULER_GROUP, STATUS_GROUP, publish_sync
from llamaproxy.supervisor import node_queue
from runners import process
from runners.arguments import RunnerConfigError, runner_args
from runners.models import Runner, RunnerState
from runners.progress import failure_reason, is_port_in_use, is_ready_hint, parse_progress

log = logging.getLogger(__name__)

HEALTH_INTERVAL_S = 0.05  # /health polls while loading
TICK_S = 0.005  # how often the log and the process are looked at while loading (first seconds)
SLOW_TICK_S = 0.02  # ... and after that: a big model's load is not worth a busy loop
START_LIMIT_S = 900.0  # a model that takes longer than this to load is treated as hung
STOP_GRACE_S = 5.0
SWEEP_PROBE_TIMEOUT_S = 2.0
HUNG_AFTER_FAILURES = 3  # consecutive failed /health probes of a ready runner
LOG_TAIL_LINES = 30
LOG_ROTATE_BYTES = 5 * 1024 * 1024
PORT_ATTEMPTS = 3
RUNNER_HOST = "127.0.0.1"  # runners listen on loopback; the gateway on this machine reaches them

# This worker's own runner processes (it must reap them) and the starts in progress here.
_children: dict[int, subprocess.Popen] = {}
_starts: dict[int, threading.Event] = {}
_probe_failures: dict[int, int] = {}
_lock = threading.Lock()


# --- events -----------------------------------------------------------------------------------


def state_event(runner: Runner) -> dict[str, Any]:
    return {
        "type": "runner.state",
        "model": runner.model.name,
        "model_id": runner.model_id,
        "state": runner.state,
        "attempt": runner.attempt,
        "node": runner.node,
        "host": runner.host,
        "port": runner.port,
        "pid": runner.pid,
        "failure_reason": runner.failure_reason,
        "log_excerpt": runner.log_excerpt if runner.state == RunnerState.FAILED else "",
    }


def _publish_state(runner_id: int) -> None:
    runner = Runner.objects.select_related("model").get(pk=runner_id)
    # The scheduler first: it has requests waiting on this.
    publish_sync(state_event(runner), (SCHEDULER_GROUP, STATUS_GROUP))


# --- logs -------------------------------------------------------------------------------------


def runner_log_path(model_name: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", model_name).strip("._") or "model"
    return Path(settings.RUNNER_LOG_DIR) / f"{safe}.log"


def tail_lines(path: Path, count: int, offset: int = 0) -> list[str]:
    """The last `count` lines of a log file, from `offset` on (the start of the current run)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            start = max(offset, size - 256 * 1024)
            handle.seek(start)
            data = handle.read()
    except OSError:
        return []
    lines = data.decode(errors="replace").splitlines()
    if start > offset and lines:
        lines = lines[1:]  # the first one is probably cut
    return lines[-count:] if count else lines


def _open_run_log(path: Path, header: str) -> int:
    """Rotate an oversized log, append a header for this run; returns where this run's output starts."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        if path.stat().st_size > LOG_ROTATE_BYTES:
            os.replace(path, path.with_suffix(".log.1"))
    with path.open("ab") as handle:
        handle.write(header.encode())
        return handle.tell()


@dataclass
class _LogReader:
    """New complete lines of a log file since the last read."""

    path: Path
    offset: int
    partial: bytes = b""
    seen: list[str] = field(default_factory=list)

    def read(self) -> list[str]:
        try:
            with self.path.open("rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except OSError:
            return []
        if not data:
            return []
        self.offset += len(data)
        data = self.partial + data
        *complete, self.partial = data.split(b"\n")
        lines = [line.decode(errors="replace").rstrip("\r") for line in complete]
        self.seen.extend(lines)
        return lines


# --- start ------------------------------------------------------------------------------------


def free_port(host: str = RUNNER_HOST) -> int:
    return ports.free_port(host)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def start_runner(
    model_id: int,
    attempt: str,
    overrides: dict[str, Any] | None = None,
    ttl_seconds: int | None = None,
    memory_estimate: int | None = None,
) -> str:
    """Start the runner of a catalog model; returns the state it ended in (ready / failed / stopped)."""
    close_old_connections()
    began = time.time()
    with _lock:
        if model_id in _starts:
            log.warning("start of model %s requested while one is in progress here", model_id)
            return RunnerState.STARTING
        cancel = _starts[model_id] = threading.Event()
    try:
        state = _start(model_id, attempt, overrides or {}, ttl_seconds, memory_estimate, cancel)
        log.info(
            "start of model %s: %s after %.0f ms (task began at %.3f)",
            model_id,
            state,
            (time.time() - began) * 1000,
            began,
        )
        return state
    finally:
        with _lock:
            _starts.pop(model_id, None)


def _get_runner(model_id: int) -> Runner:
    try:
        runner, _ = Runner.objects.select_related("model").get_or_create(model_id=model_id)
    except IntegrityError:  # created concurrently
        runner = Runner.objects.select_related("model").get(model_id=model_id)
    return runner


def _start(
    model_id: int,
    attempt: str,
    overrides: dict[str, Any],
    ttl_seconds: int | None,
    memory_estimate: int | None,
    cancel: threading.Event,
) -> str:
    runner = _get_runner(model_id)
    if runner.state == RunnerState.READY and runner.pid and process.is_alive(runner.pid, runner.pid_started):
        # Already up (a restarted gateway lost track of it): hand it over under the new attempt.
        Runner.objects.filter(pk=runner.pk).update(attempt=attempt)
        _publish_state(runner.pk)
        return RunnerState.READY
    # Claim: whatever state we saw (stopped, failed, or stale from a dead worker), unless it changed since.
    claimed = Runner.objects.filter(pk=runner.pk, state=runner.state, attempt=runner.attempt).update(
        state=RunnerState.STARTING,
        attempt=attempt,
        node=node_queue(),
        host=RUNNER_HOST,
        port=None,
        pid=None,
        pid_started=None,
        started_at=timezone.now(),
        ready_at=None,
        stopped_at=None,
        parameters=overrides,
        ttl_seconds=ttl_seconds if ttl_seconds is None or ttl_seconds >= 0 else None,
        memory_estimate=memory_estimate,
        vram_bytes=None,
        failure_reason="",
        log_excerpt="",
    )
    if not claimed:
        log.warning("runner of model %s changed while being claimed; not starting it", model_id)
        return RunnerState.STARTING
    model = runner.model
    settings_row = getattr(model, "settings", None) if _has_settings(model) else None
    log_path = runner_log_path(model.name)

    for _ in range(PORT_ATTEMPTS):
        port = free_port()
        try:
            args = runner_args(model, settings_row, host=RUNNER_HOST, port=port, overrides=overrides)
        except (RunnerConfigError, ValueError) as exc:
            return _fail(runner.pk, attempt, str(exc), [])
        header = f"\n=== llamaproxy: starting {model.name} ({attempt}) at {timezone.now().isoformat()}\n"
        header += "=== " + " ".join(args) + "\n"
        offset = _open_run_log(log_path, header)
        try:
            proc = process.spawn(args, log_path, label=f"runner:{model.name}")
        except OSError as exc:
            return _fail(runner.pk, attempt, f"could not run {args[0]}: {exc}", [])
        with _lock:
            _children[proc.pid] = proc
        started = process._create_time(proc.pid)
        Runner.objects.filter(pk=runner.pk, attempt=attempt).update(
            port=port, pid=proc.pid, pid_started=started, args=args
        )
        _publish_state(runner.pk)  # "starting", for the dashboards: after the spawn, off the critical path
        outcome, lines = _wait_until_ready(
            runner.pk, model.name, attempt, proc, port, log_path, offset, cancel
        )
        if outcome == "ready":
            updated = Runner.objects.filter(pk=runner.pk, attempt=attempt, state=RunnerState.STARTING).update(
                state=RunnerState.READY, ready_at=timezone.now()
            )
            if not updated:  # stopped while it was loading
                _terminate(proc.pid, started)
                return RunnerState.STOPPED
            _probe_failures.pop(runner.pk, None)
            _publish_state(runner.pk)
            if gpu.nvidia_smi() is not None:
                # Off the start's path: nvidia-smi takes tens of milliseconds.
                threading.Thread(target=_measure_vram, args=(runner.pk,), daemon=True).start()
            return RunnerState.READY
        _terminate(proc.pid, started)
        if outcome == "cancelled":
            return RunnerState.STOPPED
        if outcome == "exited" and is_port_in_use(lines):
            continue  # the free port was taken before llama-server bound it: pick another
        reason = failure_reason(lines, proc.returncode if outcome == "exited" else None)
        if outcome == "timeout":
            reason = f"llama-server did not become ready within {START_LIMIT_S:.0f} s"
        return _fail(runner.pk, attempt, reason, lines)
    return _fail(runner.pk, attempt, f"no free port after {PORT_ATTEMPTS} attempts", [])


def _has_settings(model: Any) -> bool:
    try:
        model.settings  # noqa: B018 — a reverse one-to-one raises when the row does not exist
    except Exception:
        return False
    return True


def _wait_until_ready(
    runner_id: int,
    model_name: str,
    attempt: str,
    proc: subprocess.Popen,
    port: int,
    log_path: Path,
    offset: int,
    cancel: threading.Event,
) -> tuple[str, list[str]]:
    """Poll /health every 50 ms (at once when the log says it is up); watch the log and the process."""
    reader = _LogReader(log_path, offset)
    url = f"http://{_url_host(RUNNER_HOST)}:{port}/health"
    began = time.monotonic()
    deadline = began + START_LIMIT_S
    next_probe = began
    last_stage = ""
    with httpx.Client(timeout=1.0) as client:
        while True:
            hint = False
            for line in reader.read():
                hint = hint or is_ready_hint(line)
                progress = parse_progress(line)
                if progress is not None and progress.stage != last_stage:
                    last_stage = progress.stage
                    _publish_progress(
                        runner_id, model_name, attempt, progress.stage, progress.percent, progress.message
                    )
            if proc.poll() is not None:
                reader.read()
                if reader.partial:
                    reader.seen.append(reader.partial.decode(errors="replace"))
                return "exited", reader.seen
            if cancel.is_set():
                return "cancelled", reader.seen
            now = time.monotonic()
            if hint or now >= next_probe:
                next_probe = now + HEALTH_INTERVAL_S
                try:
                    if client.get(url).status_code == 200:
                        return "ready", reader.seen
                except httpx.HTTPError:
                    pass  # not listening yet, or 503 while loading
            if now > deadline:
                return "timeout", reader.seen
            time.sleep(TICK_S if now - began < 2.0 else SLOW_TICK_S)


def _publish_progress(
    runner_id: int, model: str, attempt: str, stage: str, percent: int | None, message: str
) -> None:
    event = {
        "type": "runner.progress",
        "model": model,
        "runner_id": runner_id,
        "attempt": attempt,
        "stage": stage,
        "percent": percent,
        "message": message,
    }
    publish_sync(event, (SCHEDULER_GROUP, STATUS_GROUP))


def _fail(runner_id: int, attempt: str, reason: str, lines: list[str]) -> str:
    log.warning("runner %s failed: %s", runner_id, reason)
    Runner.objects.filter(pk=runner_id, attempt=attempt).update(
        state=RunnerState.FAILED,
        failure_reason=reason,
        log_excerpt="\n".join(lines[-LOG_TAIL_LINES:]),
        pid=None,
        port=None,
        stopped_at=timezone.now(),
    )
    _publish_state(runner_id)
    return RunnerState.FAILED


def _terminate(pid: int, started: float | None, grace: float = STOP_GRACE_S) -> int | None:
    """Stop a runner's process group; returns its exit status when it was our child."""
    process.terminate_group(pid, grace=grace, started=started)
    with _lock:
        child = _children.pop(pid, None)
    if child is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            return child.wait(timeout=1)
    return None


# --- stop -------------------------------------------------------------------------------------


def stop_runner(model_id: int, grace: float = STOP_GRACE_S) -> str:
    """SIGTERM the runner's group, SIGKILL after `grace`; a failed runner keeps its state and log."""
    close_old_connections()
    try:
        runner = Runner.objects.select_related("model").get(model_id=model_id)
    except Runner.DoesNotExist:
        return RunnerState.STOPPED
    with _lock:
        cancel = _starts.get(model_id)
    if runner.state in (RunnerState.READY, RunnerState.STARTING):
        # Moving it out of "starting" makes a start in progress give up instead of reporting ready.
        Runner.objects.filter(pk=runner.pk, state=runner.state).update(state=RunnerState.STOPPING)
        if runner.state == RunnerState.READY:
            _publish_state(runner.pk)
    if cancel is not None:
        cancel.set()
    runner.refresh_from_db()
    if runner.pid:
        _terminate(runner.pid, runner.pid_started, grace)
    final = RunnerState.FAILED if runner.state == RunnerState.FAILED else RunnerState.STOPPED
    Runner.objects.filter(pk=runner.pk).update(state=final, pid=None, port=None, stopped_at=timezone.now())
    _probe_failures.pop(runner.pk, None)
    _publish_state(runner.pk)
    return final


# --- health sweep -----------------------------------------------------------------------------


def health_sweep() -> int:
    """Mark this node's dead or hung runners failed (log kept); returns how many were marked."""
    close_old_connections()
    _reap_children()
    marked = 0
    node = node_queue()
    for runner in Runner.objects.select_related("model").filter(node=node, state=RunnerState.READY):
        reason = _sweep_problem(runner)
        if reason is None:
            continue
        if runner.pid:
            _terminate(runner.pid, runner.pid_started, grace=1.0)
        marked += _mark_failed(runner, reason)
    if gpu.nvidia_smi() is not None:
        _record_vram(list(Runner.objects.select_related("model").filter(node=node, state=RunnerState.READY)))
    with _lock:
        starting_here = set(_starts)
    # A row left "starting" or "stopping" by a worker that died has no start loop behind it.
    stale = Runner.objects.filter(node=node, state__in=[RunnerState.STARTING, RunnerState.STOPPING])
    for runner in stale.exclude(model_id__in=starting_here):
        if runner.updated_at and (timezone.now() - runner.updated_at).total_seconds() < 30:
            continue
        if runner.pid:
            _terminate(runner.pid, runner.pid_started, grace=1.0)
        if Runner.objects.filter(pk=runner.pk, state=runner.state, attempt=runner.attempt).update(
            state=RunnerState.STOPPED, pid=None, port=None, stopped_at=timezone.now()
        ):
            _publish_state(runner.pk)
    return marked


def _measure_vram(runner_id: int) -> None:
    try:
        _record_vram(
            list(Runner.objects.select_related("model").filter(pk=runner_id, state=RunnerState.READY))
        )
    except Exception:  # a measurement must never take a runner down
        log.exception("could not read the GPU memory of runner %s", runner_id)
    finally:
        close_old_connections()


def _record_vram(runners: list[Runner]) -> None:
    """Store and announce the GPU memory each ready runner holds, where it changed (Ollama's size_vram)."""
    if not runners:
        return
    used = gpu.process_memory()
    if used is None:
        return
    for runner in runners:
        vram = used.get(runner.pid or 0, 0)
        if vram == (runner.vram_bytes or 0) and runner.vram_bytes is not None:
            continue
        if Runner.objects.filter(pk=runner.pk, attempt=runner.attempt, state=RunnerState.READY).update(
            vram_bytes=vram
        ):
            event = {
                "type": "runner.memory",
                "model": runner.model.name,
                "attempt": runner.attempt,
                "vram_bytes": vram,
            }
            publish_sync(event, (SCHEDULER_GROUP, STATUS_GROUP))


def _sweep_problem(runner: Runner) -> str | None:
    if not runner.pid or not process.is_alive(runner.pid, runner.pid_started):
        with _lock:
            child = _children.pop(runner.pid or 0, None)
        code = child.poll() if child is not None else None
        if code is not None and code < 0:
            return f"llama-server exited unexpectedly (killed by signal {-code})"
        if code is not None:
            return f"llama-server exited unexpectedly with status {code}"
        return "llama-server exited unexpectedly"
    if _answers(runner):
        _probe_failures.pop(runner.pk, None)
        return None
    failures = _probe_failures[runner.pk] = _probe_failures.get(runner.pk, 0) + 1
    if failures >= HUNG_AFTER_FAILURES:
        _probe_failures.pop(runner.pk, None)
        return f"llama-server stopped answering /health ({failures} checks in a row); it was stopped"
    return None


def _mark_failed(runner: Runner, reason: str) -> int:
    lines = tail_lines(runner_log_path(runner.model.name), LOG_TAIL_LINES)
    updated = Runner.objects.filter(pk=runner.pk, state=runner.state, attempt=runner.attempt).update(
        state=RunnerState.FAILED,
        failure_reason=reason,
        log_excerpt="\n".join(lines),
        pid=None,
        port=None,
        stopped_at=timezone.now(),
    )
    if updated:
        log.warning("runner of %s: %s", runner.model.name, reason)
        _publish_state(runner.pk)
    return updated


def _reap_children() -> None:
    with _lock:
        children = list(_children.values())
    for child in children:
        child.poll()  # collects an exited child, so it does not linger as a zombie


# --- worker start and stop --------------------------------------------------------------------


def reconcile_node() -> None:
    """After a worker restart: adopt this node's ready runners that still answer, stop the rest."""
    close_old_connections()
    for runner in Runner.objects.select_related("model").filter(
        node=node_queue(), state__in=[RunnerState.STARTING, RunnerState.READY, RunnerState.STOPPING]
    ):
        alive = bool(runner.pid) and process.is_alive(runner.pid, runner.pid_started)
        if runner.state == RunnerState.READY and alive and _answers(runner):
            continue
        if alive:
            _terminate(runner.pid, runner.pid_started, grace=2.0)
        Runner.objects.filter(pk=runner.pk, state=runner.state).update(
            state=RunnerState.STOPPED, pid=None, port=None, stopped_at=timezone.now()
        )
        with contextlib.suppress(Exception):
            _publish_state(runner.pk)


_probe_client: httpx.Client | None = None


def _answers(runner: Runner) -> bool:
    """Whether the runner's /health says 200. One client serves every probe: a new one per call
    builds an SSL context (milliseconds of CPU), every few seconds, for plain-HTTP loopback."""
    global _probe_client
    if _probe_client is None:
        _probe_client = httpx.Client(timeout=SWEEP_PROBE_TIMEOUT_S)
    try:
        url = f"http://{_url_host(runner.host or RUNNER_HOST)}:{runner.port}/health"
        return _probe_client.get(url).status_code == 200
    except httpx.HTTPError:
        return False


def stop_node_runners(grace: float = 3.0) -> int:
    """The worker is shutting down: stop every runner it started, and record them stopped."""
    with _lock:
        for cancel in _starts.values():
            cancel.set()
        children = dict(_children)
    stopped = set(children)
    for pid in children:
        _terminate(pid, None, grace)
    with contextlib.suppress(Exception):
        close_old_connections()
        running = Runner.objects.filter(
            node=node_queue(), state__in=[RunnerState.STARTING, RunnerState.READY, RunnerState.STOPPING]
        )
        # Runners adopted after a worker restart are not our children, but ours to stop all the same.
        for pid, started in running.exclude(pid=None).values_list("pid", "pid_started"):
            if pid not in stopped and process.is_alive(pid, started):
                _terminate(pid, started, grace)
                stopped.add(pid)
        running.update(state=RunnerState.STOPPED, pid=None, port=None, stopped_at=timezone.now())
    return len(stopped)
