"""`manage.py serve` brings up every face with every component healthy and leaves nothing behind."""

from __future__ import annotations

import itertools
import signal
import subprocess
import sys
import time

import httpx
import psutil
import pytest

from tests.integration.conftest import BASE_DIR, FACES, stack_env

pytestmark = pytest.mark.integration


def test_serve_answers_health_on_all_four_ports_and_sigterm_leaves_nothing_running(make_stack) -> None:
    stack = make_stack()
    for face in FACES:
        response = httpx.get(stack.url(face) + "/health", timeout=10)
        assert response.status_code == 200, (face, response.text)
        body = response.json()
        assert body["status"] == "ok"
        assert body["face"] == face
        assert set(body["components"]) == {"database", "redis", "worker", "llama_server"}
        assert all(part["ok"] for part in body["components"].values())
        assert body["components"]["redis"]["embedded"] is True
    assert (stack.home / "redis.sock").exists()

    started = stack.all_processes()
    names = " ".join(" ".join(p.cmdline()) for p in started)
    assert "celery" in names and "llamaproxy.daphne_main" in names and "redis-server" in names

    # Beat's health sweep (every 5 s) keeps the worker heartbeat fresh, not just the worker's start.
    def heartbeat_age() -> float:
        body = httpx.get(stack.url("api") + "/health", timeout=10).json()
        return body["components"]["worker"]["last_heartbeat_seconds_ago"]

    def refreshed(ages: list[float]) -> bool:
        return any(later < earlier for earlier, later in itertools.pairwise(ages))

    ages = [heartbeat_age()]
    deadline = time.monotonic() + 12
    while not refreshed(ages) and time.monotonic() < deadline:
        time.sleep(0.5)
        ages.append(heartbeat_age())
    assert refreshed(ages), ages
    assert max(ages) < 15

    began = time.monotonic()
    code = stack.stop(signal.SIGTERM)
    assert time.monotonic() - began < 10
    assert code == 0
    time.sleep(0.2)
    alive = [p for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert alive == []


def test_serve_stops_on_ctrl_c_too(make_stack) -> None:
    stack = make_stack()
    started = stack.all_processes()
    assert stack.stop(signal.SIGINT) == 0
    time.sleep(0.2)
    assert [p for p in started if p.is_running() and p.status() != psutil.STATUS_ZOMBIE] == []


def test_health_is_503_naming_the_failing_part(make_stack, tmp_path) -> None:
    def without_llama_server(stack) -> None:
        stack.env.pop("LLAMAPROXY_LLAMA_SERVER")
        stack.env["LLAMAPROXY_BUILD_CACHE"] = str(tmp_path / "empty-cache")

    stack = make_stack(start=False, setup=without_llama_server)
    stack.start(expect_healthy=False)
    deadline = time.monotonic() + 20
    response = httpx.get(stack.url("ollama") + "/health", timeout=10)
    while "worker" in response.json().get("failing", []) and time.monotonic() < deadline:
        time.sleep(0.3)  # the worker's first heartbeat
        response = httpx.get(stack.url("ollama") + "/health", timeout=10)
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "error"
    assert body["failing"] == ["llama_server"]
    assert "install_llama_server" in body["components"]["llama_server"]["error"]


def test_serve_refuses_a_busy_port_naming_its_variable(tmp_path, llama_server_binary) -> None:
    env, ports = stack_env(tmp_path, llama_server_binary)
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", ports["ollama"]))
        busy.listen()
        result = subprocess.run(
            [sys.executable, "manage.py", "serve"],
            cwd=BASE_DIR,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode != 0
    assert "LLAMAPROXY_OLLAMA_PORT" in result.stderr


def test_an_invalid_setting_stops_start_up_naming_the_variable(tmp_path, llama_server_binary) -> None:
    env, _ = stack_env(tmp_path, llama_server_binary, LLAMAPROXY_MAX_LOADED_MODELS="lots")
    result = subprocess.run(
        [sys.executable, "manage.py", "serve"],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "LLAMAPROXY_MAX_LOADED_MODELS" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_clean_stop_stores_the_usage_of_requests_answered_just_before_it(make_stack) -> None:
    from models_catalog.tiny_model import write_tiny_model

    def setup(stack) -> None:
        write_tiny_model(stack.models_dir / "tiny-chat.gguf", name="tiny-chat", seed=1)
        stack.prepare_catalog()

    stack = make_stack(setup=setup)
    body = {"model": "tiny-chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    with httpx.Client(base_url=stack.url("api"), timeout=60) as client:
        assert client.post("/v1/chat/completions", json=body).status_code == 200  # the runner is up
        for _ in range(30):
            assert client.post("/v1/chat/completions", json=body).status_code == 200
    # At once: the last rows are still in the gateway's batch (written every half second).
    assert stack.stop() == 0
    stored = stack.manage(
        "shell",
        "-c",
        "from proxies.models import UsageRecord\n"
        "print(UsageRecord.objects.filter(endpoint='chat/completions', status=200).count())",
    )
    assert stored.stdout.split()[-1] == "31"
