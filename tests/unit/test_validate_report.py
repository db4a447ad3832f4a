"""`manage.py validate`'s report of the binaries and the model folders, without a running stack."""

from __future__ import annotations

import io
import struct
from pathlib import Path
from typing import Any

from llamaproxy.management.commands.validate import Command
from models_catalog.whisper_metadata import WHISPER_MAGIC


def report() -> tuple[Command, str]:
    out = io.StringIO()
    command = Command(stdout=out, no_color=True)
    command.failures = 0
    command.report_whisper_server()
    command.report_models()
    return command, out.getvalue()


def executable(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


def no_folders(settings: Any, tmp_path: Path) -> None:
    settings.LLAMAPROXY_MODELS_DIRS = []
    settings.LLAMAPROXY_HOME = tmp_path / "home"
    settings.LLAMAPROXY_BUILD_CACHE = tmp_path / "cache"


def test_a_missing_whisper_server_is_a_warning_not_a_failure(settings: Any, tmp_path: Path) -> None:
    no_folders(settings, tmp_path)
    settings.LLAMAPROXY_WHISPER_SERVER = None

    command, text = report()

    assert command.failures == 0
    assert "WARN whisper-server not installed" in text
    assert "install_llama_server --whisper" in text


def test_a_configured_whisper_server_that_is_not_there_is_named_in_the_warning(
    settings: Any, tmp_path: Path
) -> None:
    no_folders(settings, tmp_path)
    settings.LLAMAPROXY_WHISPER_SERVER = tmp_path / "nowhere" / "whisper-server"

    command, text = report()

    assert command.failures == 0
    assert f"LLAMAPROXY_WHISPER_SERVER ({tmp_path / 'nowhere' / 'whisper-server'})" in text


def test_an_installed_whisper_server_is_reported_with_its_path(settings: Any, tmp_path: Path) -> None:
    no_folders(settings, tmp_path)
    binary = executable(tmp_path / "opt" / "whisper-server", "echo 'version: 4242 (abc)'")
    settings.LLAMAPROXY_WHISPER_SERVER = binary

    command, text = report()

    assert command.failures == 0
    assert f"OK   whisper-server b4242 at {binary}" in text


def test_model_folders_count_gguf_and_whisper_models_as_the_scan_would(settings: Any, tmp_path: Path) -> None:
    folder = tmp_path / "models"
    (folder / "nested").mkdir(parents=True)
    (folder / "chat.gguf").write_bytes(b"GGUF")
    (folder / "nested" / "big-00001-of-00002.gguf").write_bytes(b"GGUF")
    (folder / "nested" / "big-00002-of-00002.gguf").write_bytes(b"GGUF")
    (folder / "chat-mmproj.gguf").write_bytes(b"GGUF")
    (folder / "ggml-tiny.bin").write_bytes(struct.pack("<I", WHISPER_MAGIC) + b"\0" * 60)
    (folder / "notes.bin").write_bytes(b"not a model" * 8)
    no_folders(settings, tmp_path)
    settings.LLAMAPROXY_MODELS_DIRS = [folder]
    settings.LLAMAPROXY_WHISPER_SERVER = None

    _, text = report()

    assert f"model folder {folder}: 2 GGUF model(s), 1 whisper model(s), 1 mmproj file(s)" in text
