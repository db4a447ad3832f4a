"""`manage.py install_llama_server` for real, against the already-built build cache.

`make test` runs the command before the tests, so the cache is warm here; the from-nothing build
(minutes) is not repeated. Each test gets a fresh data dir, so the copy out of the cache is
exercised too.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings

from runners.provisioning import LLAMA_SERVER, WHISPER_SERVER, binary_version, build_key

pytestmark = pytest.mark.integration

MANAGE_PY = Path(__file__).resolve().parents[2] / "manage.py"


def cached_binary(kind: str) -> Path:
    return Path(settings.LLAMAPROXY_BUILD_CACHE).expanduser() / "bin" / build_key(kind) / kind


def command_env(home: Path, **extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("LLAMAPROXY_LLAMA_SERVER", "LLAMAPROXY_WHISPER_SERVER")
    }
    env["LLAMAPROXY_HOME"] = str(home)
    env["LLAMAPROXY_BUILD_CACHE"] = str(Path(settings.LLAMAPROXY_BUILD_CACHE).expanduser())
    env.update(extra)
    return env


def install(home: Path, *flags: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(MANAGE_PY), "install_llama_server", *flags],
        env=command_env(home, **extra_env),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def warm_llama() -> Path:
    cached = cached_binary(LLAMA_SERVER)
    if not cached.is_file():
        pytest.fail(
            f"no llama-server in the build cache ({cached}): run `python manage.py install_llama_server`"
        )
    return cached


def test_second_call_is_instant_and_prints_the_path(warm_llama: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    expected = home / "bin" / build_key(LLAMA_SERVER) / LLAMA_SERVER
    first = install(home)
    assert first.returncode == 0, first.stderr
    assert f"llama-server b11434: {expected}" in first.stdout
    assert expected.read_bytes() == warm_llama.read_bytes()

    started = time.perf_counter()
    second = install(home)
    elapsed = time.perf_counter() - started
    assert second.returncode == 0, second.stderr
    assert elapsed < 2.0, f"second call took {elapsed:.2f} s"
    assert str(expected) in second.stdout
    assert "building" not in second.stdout


def test_print_path_prints_only_the_path(warm_llama: Path, tmp_path: Path) -> None:
    done = install(tmp_path / "home", "--print-path")
    assert done.returncode == 0, done.stderr
    path = Path(done.stdout.strip())
    assert done.stdout == f"{path}\n"
    assert path.is_file()
    assert os.access(path, os.X_OK)


def test_the_binary_runs(warm_llama: Path, tmp_path: Path) -> None:
    path = Path(install(tmp_path / "home", "--print-path").stdout.strip())
    done = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=10)
    assert done.returncode == 0
    assert "11434" in done.stdout + done.stderr
    assert binary_version(path) == "b11434"


def test_configured_binary_is_used(warm_llama: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    done = install(home, LLAMAPROXY_LLAMA_SERVER=str(warm_llama))
    assert done.returncode == 0, done.stderr
    assert f"LLAMAPROXY_LLAMA_SERVER is set: using {warm_llama}" in done.stdout
    assert f"llama-server b11434: {warm_llama}" in done.stdout
    assert not (home / "bin").exists()


def test_a_failed_build_is_a_clear_error_without_traceback(tmp_path: Path) -> None:
    # An empty cache and no cmake on PATH: the build must stop with a readable message.
    done = install(tmp_path / "home", LLAMAPROXY_BUILD_CACHE=str(tmp_path / "cache"), PATH=str(tmp_path))
    assert done.returncode != 0
    assert "cmake" in done.stderr
    assert "Traceback" not in done.stderr


def test_whisper_server_from_the_cache(tmp_path: Path) -> None:
    cached = cached_binary(WHISPER_SERVER)
    if not cached.is_file():
        pytest.skip(f"no whisper-server in the build cache ({cached}): `install_llama_server --whisper`")
    home = tmp_path / "home"
    done = install(home, "--whisper")
    assert done.returncode == 0, done.stderr
    path = home / "bin" / build_key(WHISPER_SERVER) / WHISPER_SERVER
    assert f"whisper-server v1.8.5: {path}" in done.stdout
    usage = subprocess.run([str(path), "--help"], capture_output=True, text=True, timeout=10)
    assert usage.returncode == 0
    assert "usage" in (usage.stdout + usage.stderr).lower()
