"""`manage.py validate`: a readable report, and a non-zero exit when something is wrong."""

from __future__ import annotations

import socket

import httpx
import pytest

pytestmark = pytest.mark.integration


def test_validate_reports_every_part_of_a_running_service(make_stack) -> None:
    stack = make_stack()
    result = stack.manage("validate", check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    report = result.stdout
    assert "llama-server b11434" in report
    assert "llamaproxy is running" in report
    assert "Redis answers" in report
    assert "Celery worker alive" in report
    assert "All checks passed." in report


def test_validate_fails_on_a_missing_binary_and_a_busy_port(make_stack, tmp_path) -> None:
    def broken(stack) -> None:
        stack.env.pop("LLAMAPROXY_LLAMA_SERVER")
        stack.env["LLAMAPROXY_BUILD_CACHE"] = str(tmp_path / "empty-cache")

    stack = make_stack(start=False, setup=broken)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", stack.ports["lmstudio"]))
        busy.listen()
        result = stack.manage("validate", check=False)
    assert result.returncode == 1
    assert "FAIL" in result.stdout
    assert "llama-server is not installed" in result.stdout
    # What a build would target here: the CPU, or CUDA where nvcc and a GPU are present.
    assert "build backend: CPU only" in result.stdout or "build backend: CUDA" in result.stdout
    assert "LLAMAPROXY_LMSTUDIO_PORT" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_the_admin_is_styled(make_stack) -> None:
    stack = make_stack()
    login = httpx.get(stack.url("dashboard") + "/admin/login/")
    assert login.status_code == 200
    css = httpx.get(stack.url("dashboard") + "/static/admin/css/base.css")
    assert css.status_code == 200
    assert "text/css" in css.headers["content-type"]
