"""Restart safety and preload through the real stack: `manage.py serve`, Redis, the Celery worker
and real llama-server processes on tiny random-weight models.

- preload: models are started when serve starts, before any request;
- a fresh serve on a home whose database records runners: a live one is adopted (same process,
  requests served), a dead one is marked stopped, a mute one is killed;
- serve killed outright leaves no runner behind, and the next serve starts from a clean record;
- a frozen runner (SIGSTOP) is found by the health sweep, killed, and replaced on the next request.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import textwrap
import time

import psutil
import pytest

from tests.integration.test_runners import (
    catalog,
    chat,
    runner_processes,
    runners,
    starts_in_log,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def test_models_to_preload_are_running_soon_after_serve_starts_without_any_request(make_stack) -> None:
    eager = "RunnerSettings.objects.filter(model__name='eager').update(preload=True)"
    stack = make_stack(
        setup=catalog("eager", "named", "lazy", shell=eager),
        LLAMAPROXY_PRELOAD="named",
        LLAMAPROXY_MAX_LOADED_MODELS="3",
    )
    # Only /health has been asked so far (it does not touch the scheduler): processes, not the API,
    # prove that the gateway started them by itself.
    started = wait_for(
        lambda: len(runner_processes(stack)) == 2 and runner_processes(stack),
        10,
        "both preloaded runners to be running",
    )
    cmdlines = " ".join(" ".join(p.cmdline()) for p in started)
    assert "eager.gguf" in cmdlines and "named.gguf" in cmdlines and "lazy.gguf" not in cmdlines
    status = wait_for(
        lambda: (s := runners(stack))["eager"]["state"] == "ready" and s["named"]["state"] == "ready" and s,
        10,
        "both preloaded runners ready",
    )
    assert status.get("lazy", {"state": "stopped"})["state"] == "stopped"
    assert chat(stack, "eager").status_code == 200
    assert starts_in_log(stack, "eager") == 1  # the request used the preloaded runner


# Run by `manage.py shell` with the stack's settings before serve starts: three runners recorded
# as ready by a gateway and worker that are gone. "kept" answers /health, "mute" is a real
# llama-server frozen with SIGSTOP, "gone" is a process that has exited.
LEFT_BEHIND = textwrap.dedent(
    """
    import json, os, signal, subprocess, sys, time
    import httpx
    from django.utils import timezone
    from llamaproxy.supervisor import node_queue
    from models_catalog.models import CatalogModel
    from runners import process
    from runners.agent import RUNNER_HOST, free_port, runner_log_path
    from runners.arguments import runner_args
    from runners.models import Runner

    def record(name, proc, port):
        model = CatalogModel.objects.get(name=name)
        Runner.objects.update_or_create(model=model, defaults=dict(
            state="ready", attempt="before-" + name, node=node_queue(), host=RUNNER_HOST, port=port,
            pid=proc.pid, pid_started=process._create_time(proc.pid), started_at=timezone.now(),
            ready_at=timezone.now()))

    def spawn(name):
        model = CatalogModel.objects.get(name=name)
        port = free_port()
        args = runner_args(model, model.settings, host=RUNNER_HOST, port=port)
        proc = process.spawn(args, runner_log_path(name), label="runner:" + name)
        for _ in range(200):
            try:
                if httpx.get(f"http://{RUNNER_HOST}:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        else:
            sys.exit(f"{name} did not become ready")
        return proc, port

    kept, kept_port = spawn("kept")
    mute, mute_port = spawn("mute")
    os.kill(mute.pid, signal.SIGSTOP)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    for name, proc, port in (("kept", kept, kept_port), ("mute", mute, mute_port)):
        record(name, proc, port)
    Runner.objects.update_or_create(
        model=CatalogModel.objects.get(name="gone"),
        defaults=dict(state="ready", attempt="before-gone", node=node_queue(), host=RUNNER_HOST,
                      port=free_port(), pid=gone.pid, pid_started=time.time() - 60),
    )
    print(json.dumps({"kept": kept.pid, "mute": mute.pid, "gone": gone.pid}))
    """
)


def test_a_fresh_serve_adopts_a_live_runner_and_clears_dead_and_mute_ones(make_stack) -> None:
    pids: dict[str, int] = {}

    def setup(stack) -> None:
        catalog("kept", "mute", "gone")(stack)
        left = stack.manage("shell", "-c", LEFT_BEHIND)
        pids.update(json.loads(left.stdout.strip().splitlines()[-1]))

    try:
        stack = make_stack(setup=setup, LLAMAPROXY_MAX_LOADED_MODELS="2")
        assert alive(pids["kept"]) and alive(pids["mute"])
        status = wait_for(
            lambda: (
                (s := runners(stack))["kept"]["state"] == "ready"
                and s.get("mute", {}).get("state", "stopped") == "stopped"
                and not alive(pids["mute"])
                and s
            ),
            20,
            "kept adopted and mute cleared",
        )
        assert status["kept"]["pid"] == pids["kept"]
        assert status.get("gone", {"state": "stopped"})["state"] in ("stopped", "failed")
        assert chat(stack, "kept").status_code == 200
        after = runners(stack)["kept"]
        assert after["state"] == "ready" and after["pid"] == pids["kept"]  # served by the same process
        assert starts_in_log(stack, "kept") == 0  # llamaproxy never started another one
        assert [p.pid for p in runner_processes(stack)] == [pids["kept"]]

        assert stack.stop() == 0
        wait_for(lambda: not alive(pids["kept"]), 5, "the adopted runner to stop with serve")
        assert runner_processes(stack) == []
    finally:
        for name in ("kept", "mute"):  # whatever the test left behind ("gone"'s pid may be reused)
            with contextlib.suppress(psutil.Error, KeyError):
                proc = psutil.Process(pids[name])
                if "llama-server" in " ".join(proc.cmdline()):
                    proc.kill()


def test_serve_killed_outright_leaves_no_runner_and_the_next_serve_starts_it_afresh(make_stack) -> None:
    stack = make_stack(setup=catalog("phoenix"))
    assert chat(stack, "phoenix").status_code == 200
    first_pid = runners(stack)["phoenix"]["pid"]
    descendants = [p for p in stack.all_processes() if p.pid != stack.proc.pid]

    stack.proc.send_signal(signal.SIGKILL)  # serve only: its children learn it through PDEATHSIG
    stack.proc.wait(5)
    wait_for(lambda: not alive(first_pid), 15, "the runner to be stopped by the dying worker")
    wait_for(lambda: not [p for p in descendants if alive(p.pid)], 15, "gateway, worker and Redis to exit")
    assert runner_processes(stack) == []

    stack.start()
    status = runners(stack).get("phoenix", {"state": "stopped"})
    assert status["state"] in ("stopped", "failed") and status.get("pid") is None
    assert chat(stack, "phoenix").status_code == 200
    assert runners(stack)["phoenix"]["pid"] not in (None, first_pid)
    assert starts_in_log(stack, "phoenix") == 2


def test_a_frozen_runner_is_found_by_the_health_sweep_killed_and_replaced_on_the_next_request(
    make_stack,
) -> None:
    stack = make_stack(setup=catalog("frozen"))
    assert chat(stack, "frozen").status_code == 200
    pid = runners(stack)["frozen"]["pid"]
    os.kill(pid, signal.SIGSTOP)  # alive, holding its port, answering nothing
    frozen_at = time.monotonic()

    failed = wait_for(
        lambda: (row := runners(stack)["frozen"])["state"] == "failed" and row,
        40,
        "the health sweep to mark the frozen runner failed",
    )
    assert "stopped answering /health" in failed["failure_reason"]
    assert time.monotonic() - frozen_at >= 5  # one missed probe is not enough
    wait_for(lambda: not alive(pid), 5, "the frozen process to be killed")
    response = chat(stack, "frozen")
    assert response.status_code == 200, response.text
    status = runners(stack)["frozen"]
    assert status["state"] == "ready" and status["pid"] != pid
    assert starts_in_log(stack, "frozen") == 2
