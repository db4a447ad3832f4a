"""A model's own server binary (RunnerSettings.server_binary) replaces the installed one."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from runners.arguments import RunnerConfigError, runner_args


@dataclass
class Model:
    name: str = "qwen-ik"
    path: str = "/models/qwen.gguf"
    kind: str = "llm"


@dataclass
class Settings:
    runtime: str = "llama-server"
    server_binary: str = ""


def installed(kind: str) -> Path | None:
    return Path(f"/installed/{kind}")


def args_for(settings: Settings, find_binary=installed) -> list[str]:
    return runner_args(Model(), settings, host="127.0.0.1", port=40123, find_binary=find_binary)


def executable(path: Path) -> Path:
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_without_a_server_binary_the_installed_llama_server_runs() -> None:
    assert args_for(Settings())[0] == "/installed/llama-server"


def test_a_server_binary_replaces_the_installed_one_even_when_none_is_installed(tmp_path: Path) -> None:
    binary = executable(tmp_path / "ik-llama-server")

    args = args_for(Settings(server_binary=str(binary)), find_binary=lambda kind: None)

    assert args[0] == str(binary) and args[1:3] == ["-m", "/models/qwen.gguf"]


def test_a_whisper_models_server_binary_replaces_the_installed_whisper_server(tmp_path: Path) -> None:
    binary = executable(tmp_path / "whisper-server-cuda")

    assert args_for(Settings(runtime="whisper-server", server_binary=str(binary)))[0] == str(binary)


def test_a_missing_server_binary_fails_the_start_naming_the_model_and_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "gone" / "llama-server"

    with pytest.raises(RunnerConfigError, match=f"server binary of 'qwen-ik' does not exist: {missing}"):
        args_for(Settings(server_binary=str(missing)))


def test_a_server_binary_that_is_not_executable_is_refused(tmp_path: Path) -> None:
    plain = tmp_path / "llama-server"
    plain.write_text("not a program")

    with pytest.raises(RunnerConfigError, match="is not executable"):
        args_for(Settings(server_binary=str(plain)))
