"""Shared fixtures: real binaries, tiny models (free ports: llamaproxy.ports)."""

from __future__ import annotations

from pathlib import Path

import pytest


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
