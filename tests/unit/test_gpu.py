"""nvidia-smi output parsing (llamaproxy.gpu) and the choice of a build backend (provisioning)."""

from __future__ import annotations

import pytest

from llamaproxy.gpu import MIB, parse_gpus, parse_process_memory
from runners.provisioning import ProvisioningError, cuda_architectures, select_backend

# What `nvidia-smi --query-gpu=index,name,memory.total,memory.used,utilization.gpu,temperature.gpu,
# compute_cap --format=csv,noheader,nounits` prints on a two-GPU machine, one reading missing.
GPUS = """0, NVIDIA H100 80GB HBM3, 81559, 1024, 37, 41, 9.0
1, NVIDIA GeForce RTX 3090, 24576, 0, [N/A], [Not Supported], 8.6
"""

APPS = """4242, 1530
4243, 200
4242, 470
"""


def test_gpus_are_read_with_units_and_missing_readings() -> None:
    first, second = parse_gpus(GPUS)
    assert (first.index, first.name, first.compute_cap) == (0, "NVIDIA H100 80GB HBM3", "9.0")
    assert first.memory_total == 81559 * MIB and first.memory_used == 1024 * MIB
    assert (first.utilization, first.temperature) == (37.0, 41.0)
    assert second.utilization is None and second.temperature is None and second.compute_cap == "8.6"
    assert first.as_dict()["memory_total"] == 81559 * MIB


def test_lines_that_are_not_readings_are_skipped() -> None:
    assert parse_gpus("No devices were found\n") == []
    assert parse_process_memory("") == {}
    assert parse_process_memory("[N/A], 12\n") == {}


def test_process_memory_adds_up_a_process_on_several_gpus() -> None:
    assert parse_process_memory(APPS) == {4242: 2000 * MIB, 4243: 200 * MIB}


def test_cuda_architectures_are_distinct_and_sorted() -> None:
    assert cuda_architectures(["9.0", "8.6", "9.0", "", "n/a"]) == ["86", "90"]


def test_auto_builds_for_cuda_only_with_compiler_and_gpu() -> None:
    cuda = select_backend("auto", "/usr/local/cuda/bin/nvcc", ["9.0"])
    assert cuda.name == "cuda" and cuda.key_suffix == "-cuda90"
    assert "-DGGML_CUDA=ON" in cuda.cmake_flags
    assert "-DCMAKE_CUDA_ARCHITECTURES=90" in cuda.cmake_flags
    assert "-DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc" in cuda.cmake_flags
    two = select_backend("auto", "/usr/bin/nvcc", ["8.6", "9.0"])
    assert two.key_suffix == "-cuda86_90" and "-DCMAKE_CUDA_ARCHITECTURES=86;90" in two.cmake_flags

    no_gpu = select_backend("auto", "/usr/bin/nvcc", None)
    assert (no_gpu.name, no_gpu.key_suffix, no_gpu.cmake_flags) == ("cpu", "", ())
    assert "no NVIDIA GPU" in no_gpu.note
    no_compiler = select_backend("auto", None, ["9.0"])
    assert no_compiler.name == "cpu" and "nvcc" in no_compiler.note


def test_cpu_is_cpu_even_with_cuda_present() -> None:
    assert select_backend("cpu", "/usr/bin/nvcc", ["9.0"]).name == "cpu"


@pytest.mark.parametrize(
    ("nvcc", "caps", "problem"),
    [(None, ["9.0"], "nvcc was not found"), ("/usr/bin/nvcc", [], "lists no GPU")],
)
def test_cuda_insisted_on_without_cuda_is_an_error(nvcc: str | None, caps: list[str], problem: str) -> None:
    with pytest.raises(ProvisioningError, match=problem):
        select_backend("cuda", nvcc, caps)


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(ProvisioningError, match="not one of auto, cpu, cuda"):
        select_backend("rocm", None, None)
