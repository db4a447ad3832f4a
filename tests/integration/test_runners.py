"""Runners through the real stack: `manage.py serve`, Redis, the Celery worker, real llama-server
processes on tiny random-weight models. Requests go through the api face like a client's would."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest

from models_catalog.tiny_model import write_tiny_model

pytestmark = pytest.mark.integration

CHAT = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 4, "temperature": 0}


def write_broken_model(path: Path) -> None:
    """A GGUF the scanner reads (headers are fine) but llama-server refuses: hyperparameters missing."""
    import gguf

    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name(path.stem)
    writer.add_context_length(256)
    writer.add_embedding_length(64)
    writer.add_block_count(2)
    writer.add_head_count(4)
    writer.add_head_count_kv(2)
    writer.add_tensor("garbage.weight", np.zeros((64, 64), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def catalog(*names: str, broken: tuple[str, ...] = (), shell: str = "") -> Callable:
    """A `setup` for make_stack: model files, a scan, and optional settings (ORM code) before serve."""

    def setup(stack) -> None:
        for seed, name in enumerate(names):
            write_tiny_model(stack.models_dir / f"{name}.gguf", name=name, seed=seed)
        for name in broken:
            write_broken_model(stack.models_dir / f"{name}.gguf")
        stack.prepare_catalog()
        if shell:
            stack.manage("shell", "-c", "from models_catalog.models import RunnerSettings\n" + shell)

    return setup


def chat(stack, model: str, **extra) -> httpx.Response:
    return httpx.post(
        stack.url("api") + "/v1/chat/completions", json={**CHAT, "model": model, **extra}, timeout=60
    )


def runners(stack) -> dict[str, dict]:
    response = httpx.get(
        stack.url("dashboard") + "/api/manage/runners", headers=stack.admin_headers(), timeout=30
    )
    assert response.status_code == 200, response.text
    return {row["model"]: row for row in response.json()}


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def runner_processes(stack) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        is_runner = "llama-server" in cmdline.split(" ")[0] and str(stack.models_dir) in cmdline
        with contextlib.suppress(psutil.Error):
            if is_runner and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
    return found


def starts_in_log(stack, model: str) -> int:
    path = stack.log_dir / "runners" / f"{model}.log"
    return path.read_text(errors="replace").count("=== llamaproxy: starting") if path.exists() else 0


def test_twenty_concurrent_requests_to_a_cold_model_start_one_process_and_all_succeed(make_stack) -> None:
    stack = make_stack(setup=catalog("cold"))
    with ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(pool.map(lambda _: chat(stack, "cold"), range(20)))
    assert [r.status_code for r in responses] == [200] * 20, [
        r.text for r in responses if r.status_code != 200
    ]
    assert all(r.json()["choices"][0]["message"]["role"] == "assistant" for r in responses)
    assert starts_in_log(stack, "cold") == 1
    assert len(runner_processes(stack)) == 1
    status = runners(stack)["cold"]
    assert status["state"] == "ready" and status["in_flight"] == 0 and status["port"]

    started = runner_processes(stack)
    assert stack.stop() == 0
    time.sleep(0.2)
    assert [p for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE] == []


def test_with_one_model_allowed_b_waits_for_as_stream_to_finish_then_only_b_runs(make_stack) -> None:
    # A's stream must outlast the polling below: the tiny model makes 3,000 tokens in under a
    # second, and the relay does not wait for a client that stops reading (socket buffers and
    # Twisted's take the whole stream). The 60M "small" model takes several seconds for them.
    def setup(stack) -> None:
        write_tiny_model(stack.models_dir / "alpha.gguf", size="small", name="alpha", seed=0)
        catalog("beta")(stack)

    stack = make_stack(setup=setup, LLAMAPROXY_MAX_LOADED_MODELS="1")
    assert chat(stack, "alpha").status_code == 200
    stream_body = {**CHAT, "model": "alpha", "stream": True, "max_tokens": 3000, "ignore_eos": True}
    b_result: dict[str, object] = {}

    def request_b() -> None:
        b_result["response"] = chat(stack, "beta")
        b_result["at"] = time.monotonic()

    with httpx.Client(timeout=60) as client:
        with client.stream("POST", stack.url("api") + "/v1/chat/completions", json=stream_body) as stream:
            assert stream.status_code == 200
            lines = stream.iter_lines()
            first = next(line for line in lines if line.startswith("data:"))
            b_thread = threading.Thread(target=request_b)
            b_thread.start()
            # While A streams, A is draining (not killed) and B waits in the queue.
            seen = wait_for(
                lambda: (s := runners(stack))["alpha"]["state"] == "draining" and s["beta"]["queued"] == 1,
                10,
                "alpha draining and beta queued",
            )
            assert seen
            assert "response" not in b_result
            rest = [line for line in lines if line.startswith("data:")]
            a_done = time.monotonic()
        b_thread.join(30)
    assert first and rest[-1] == "data: [DONE]"
    assert len(rest) > 2500  # the whole stream came through: A was not stopped under it
    response = b_result["response"]
    assert response.status_code == 200, response.text
    assert b_result["at"] >= a_done - 1.0
    status = runners(stack)
    assert status["alpha"]["state"] == "stopped" and status["beta"]["state"] == "ready"
    assert len(runner_processes(stack)) == 1


def test_an_idle_model_is_unloaded_on_time_and_a_pinned_model_is_never_evicted(make_stack) -> None:
    pin = "RunnerSettings.objects.filter(model__name='keeper').update(pinned=True)"
    stack = make_stack(
        setup=catalog("keeper", "second", "third", shell=pin),
        LLAMAPROXY_MAX_LOADED_MODELS="2",
        LLAMAPROXY_DEFAULT_TTL="3",
    )
    for name in ("keeper", "second"):
        assert chat(stack, name).status_code == 200
    # A third model needs a slot: the unpinned one goes, however recently the pinned one was used.
    assert chat(stack, "third").status_code == 200
    status = runners(stack)
    assert status["keeper"]["state"] == "ready" and status["second"]["state"] == "stopped"
    assert status["third"]["expires_at"] is not None and status["keeper"]["expires_at"] is None
    used = time.monotonic()
    wait_for(lambda: runners(stack)["third"]["state"] == "stopped", 10, "third unloaded by its TTL")
    assert 2.5 <= time.monotonic() - used <= 6.0
    assert runners(stack)["keeper"]["state"] == "ready"
    assert len(runner_processes(stack)) == 1


def test_a_runner_killed_with_sigkill_is_marked_and_the_next_request_starts_it_again(make_stack) -> None:
    stack = make_stack(setup=catalog("victim"))
    assert chat(stack, "victim").status_code == 200
    pid = runners(stack)["victim"]["pid"]
    os.kill(pid, signal.SIGKILL)
    failed = wait_for(
        lambda: (row := runners(stack)["victim"])["state"] == "failed" and row,
        12,
        "the health sweep to mark it",
    )
    assert "signal 9" in failed["failure_reason"]
    assert chat(stack, "victim").status_code == 200
    status = runners(stack)["victim"]
    assert status["state"] == "ready" and status["pid"] != pid
    assert starts_in_log(stack, "victim") == 2


def test_a_garbage_model_gets_a_503_with_llama_servers_error_and_other_models_keep_working(
    make_stack,
) -> None:
    stack = make_stack(setup=catalog("fine", broken=("broken",)), LLAMAPROXY_MAX_LOADED_MODELS="2")
    response = chat(stack, "broken")
    assert response.status_code == 503, response.text
    message = response.json()["error"]["message"]
    assert "broken" in message and "layer_norm_rms_epsilon" in message  # llama-server's own words
    status = runners(stack)["broken"]
    assert status["state"] == "failed" and "layer_norm_rms_epsilon" in status["failure_reason"]
    log = httpx.get(
        stack.url("dashboard") + "/api/manage/runners/broken/log",
        params={"lines": 50},
        headers=stack.admin_headers(),
    ).json()
    assert any("error loading model" in line for line in log["lines"])
    assert chat(stack, "fine").status_code == 200
    assert chat(stack, "broken").status_code == 503  # tried again, failed again, still clear


def test_the_runners_command_loads_shows_logs_and_unloads_through_the_gateway(make_stack) -> None:
    stack = make_stack(setup=catalog("handy"))
    loaded = stack.manage("runners", "load", "handy", check=False)
    assert loaded.returncode == 0, loaded.stderr
    assert "handy is ready on port" in loaded.stdout
    assert "handy" in stack.manage("runners", "status").stdout
    logs = stack.manage("runners", "logs", "handy", "-n", "5").stdout
    assert "listening on" in logs or "model loaded" in logs
    missing = stack.manage("runners", "load", "nope", check=False)
    assert missing.returncode != 0 and "'nope' not found" in missing.stderr
    assert "unloaded" in stack.manage("runners", "unload", "handy").stdout
    assert runner_processes(stack) == []
    stack.stop()
    stopped = stack.manage("runners", "status", check=False)
    assert stopped.returncode != 0 and "not running" in stopped.stderr


def test_a_limit_raised_by_an_import_in_another_process_lets_two_models_run_without_a_restart(
    make_stack, tmp_path: Path
) -> None:
    stack = make_stack(setup=catalog("first", "second"), LLAMAPROXY_MAX_LOADED_MODELS="1")
    for name in ("first", "second"):
        assert chat(stack, name).status_code == 200
    assert runners(stack)["first"]["state"] == "stopped"  # one slot: second took it
    config = tmp_path / "app_config.json"
    config.write_text(json.dumps({"max_loaded_models": 2}))

    imported = stack.manage("import_config", str(config), check=False)

    assert imported.returncode == 0, imported.stderr
    wait_for(
        lambda: (
            httpx.get(
                stack.url("dashboard") + "/api/manage/settings", headers=stack.admin_headers(), timeout=10
            ).json()["effective"]["max_loaded_models"]
            == 2
        ),
        10,
        "the gateway to see the imported limit",
    )
    time.sleep(0.5)  # the scheduler reads the limits again when the settings.changed event arrives
    assert chat(stack, "first").status_code == 200
    status = runners(stack)
    assert status["first"]["state"] == "ready" and status["second"]["state"] == "ready"
    assert len(runner_processes(stack)) == 2


def test_a_models_own_server_binary_runs_and_a_missing_one_fails_the_start_naming_it(
    make_stack, llama_server_binary: Path
) -> None:
    def setup(stack) -> None:
        own = stack.root / "other-build" / "llama-server"
        own.parent.mkdir()
        shutil.copy2(llama_server_binary, own)
        shell = (
            f"RunnerSettings.objects.filter(model__name='own').update(server_binary={str(own)!r})\n"
            "RunnerSettings.objects.filter(model__name='lost').update(server_binary='/nowhere/llama-server')"
        )
        catalog("own", "lost", shell=shell)(stack)

    stack = make_stack(setup=setup, LLAMAPROXY_MAX_LOADED_MODELS="2")
    assert chat(stack, "own").status_code == 200
    [runner] = runner_processes(stack)
    assert runner.cmdline()[0] == str(stack.root / "other-build" / "llama-server")
    response = chat(stack, "lost")
    assert response.status_code == 503
    message = response.json()["error"]["message"]
    assert "server binary of 'lost' does not exist: /nowhere/llama-server" in message
    assert runners(stack)["lost"]["state"] == "failed"


def test_a_full_queue_is_a_429_and_a_wait_past_the_timeout_a_503_in_each_faces_shape(make_stack) -> None:
    # A runner that never becomes ready (a process that ignores its port), two places in the
    # queue and a 4 s wait at most.
    never_ready = json.dumps(f"{sys.executable} -c 'import time; time.sleep(600)' --port {{port}}")
    shell = f"RunnerSettings.objects.filter(model__name='stuck').update(runtime='custom', custom_command={never_ready})"
    stack = make_stack(
        setup=catalog("stuck", shell=shell), LLAMAPROXY_MAX_QUEUE="2", LLAMAPROXY_REQUEST_TIMEOUT="4"
    )
    with ThreadPoolExecutor(max_workers=2) as pool:
        waiting = [pool.submit(chat, stack, "stuck") for _ in range(2)]
        wait_for(lambda: runners(stack).get("stuck", {}).get("queued") == 2, 10, "two queued requests")

        full = chat(stack, "stuck")
        assert full.status_code == 429, full.text
        assert full.json()["error"]["code"] == "queue_full"
        assert full.json()["error"]["type"] == "rate_limit_error"
        assert "too many requests are waiting for models (2)" in full.json()["error"]["message"]
        ollama = httpx.post(
            stack.url("ollama") + "/api/chat",
            json={"model": "stuck", "messages": [{"role": "user", "content": "hi"}], "stream": False},
            timeout=30,
        )
        assert ollama.status_code == 429
        assert "too many requests are waiting" in ollama.json()["error"]
        lmstudio = httpx.post(
            stack.url("lmstudio") + "/api/v0/chat/completions", json={**CHAT, "model": "stuck"}, timeout=30
        )
        assert lmstudio.status_code == 429
        assert lmstudio.json()["error"]["code"] == "queue_full"

        timed_out = [future.result() for future in waiting]
    for response in timed_out:
        assert response.status_code == 503, response.text
        error = response.json()["error"]
        assert error["code"] == "queue_timeout"
        assert (
            error["message"]
            == "model 'stuck' was not ready within 4 s: it is still loading (process started)"
        )
    assert runners(stack)["stuck"]["queued"] == 0
    assert chat(stack, "stuck", stream=True).status_code == 503  # the queue has room again
