"""Shared fixtures: real binaries, free ports, tiny models."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports: each socket stays bound until all are picked (one closed at
    once may be handed out again by the next bind, and two faces on one port is a config error)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@pytest.fixture(scope="session")
def llama_server_binary() -> Path:
    """The real llama-server: LLAMAPROXY_LLAMA_SERVER or the one `install_llama_server` built."""
    from runners.provisioning import installed_binary

    binary = installed_binary("llama-server")
    if binary is None:
        pytest.fail(
            "llama-server is not installed: run `python manage.py install_llama_server` (make test does)"
        )
    return binary


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny random-weight chat model shared by the session's tests."""
    from models_catalog.tiny_model import write_tiny_model

    path = tmp_path_factory.mktemp("models") / "tiny-chat.gguf"
    write_tiny_model(path, size="tiny", name="tiny-chat", seed=1)
    return path
