"""What `nvidia-smi` says about this machine's NVIDIA GPUs and the processes that use them.

Used by the System page (the GPUs), the node agent (the video memory each runner holds: Ollama's
`size_vram`) and provisioning (the compute capability a CUDA build targets). Every query is one
short subprocess; a machine without `nvidia-smi`, or one where it fails, simply has no GPUs.
The parsers are pure so that they can be tested with the tool's own output.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

QUERY_TIMEOUT_S = 5.0
GPU_FIELDS = (
    "index",
    "name",
    "memory.total",
    "memory.used",
    "utilization.gpu",
    "temperature.gpu",
    "compute_cap",
)
APP_FIELDS = ("pid", "used_memory")
MIB = 1024**2


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    memory_total: int | None  # bytes
    memory_used: int | None
    utilization: float | None  # percent
    temperature: float | None  # °C
    compute_cap: str  # "9.0"; "" where the driver does not say

    def as_dict(self) -> dict[str, object]:
        return {
            "index": self.index,
            "name": self.name,
            "memory_total": self.memory_total,
            "memory_used": self.memory_used,
            "utilization": self.utilization,
            "temperature": self.temperature,
            "compute_cap": self.compute_cap,
        }


def nvidia_smi() -> str | None:
    return shutil.which("nvidia-smi")


def _number(text: str) -> float | None:
    """nvidia-smi writes "[N/A]" or "[Not Supported]" where a reading is missing."""
    try:
        return float(text)
    except ValueError:
        return None


def parse_gpus(text: str) -> list[Gpu]:
    """`--query-gpu=<GPU_FIELDS> --format=csv,noheader,nounits` output → one Gpu per line."""
    found: list[Gpu] = []
    for line in text.splitlines():
        parts = [part.strip() for part in line.split(",")]
        if len(parts) != len(GPU_FIELDS):
            continue
        index = _number(parts[0])
        total, used = _number(parts[2]), _number(parts[3])
        cap = parts[6] if _number(parts[6]) is not None else ""
        found.append(
            Gpu(
                index=int(index) if index is not None else len(found),
                name=parts[1],
                memory_total=int(total * MIB) if total is not None else None,
                memory_used=int(used * MIB) if used is not None else None,
                utilization=_number(parts[4]),
                temperature=_number(parts[5]),
                compute_cap=cap,
            )
        )
    return found


def parse_process_memory(text: str) -> dict[int, int]:
    """`--query-compute-apps=pid,used_memory --format=csv,noheader,nounits` → bytes per pid.

    A process on several GPUs has a line for each; they are added up.
    """
    used: dict[int, int] = {}
    for line in text.splitlines():
        parts = [part.strip() for part in line.split(",")]
        if len(parts) != len(APP_FIELDS):
            continue
        pid, mib = _number(parts[0]), _number(parts[1])
        if pid is None or mib is None:
            continue
        used[int(pid)] = used.get(int(pid), 0) + int(mib * MIB)
    return used


def _query(*args: str) -> str | None:
    binary = nvidia_smi()
    if binary is None:
        return None
    try:
        done = subprocess.run(
            [binary, *args, "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=QUERY_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def gpus() -> list[Gpu] | None:
    """The GPUs, or None where nvidia-smi is absent or does not answer (blocking: up to 5 s)."""
    out = _query(f"--query-gpu={','.join(GPU_FIELDS)}")
    return None if out is None else parse_gpus(out)


def process_memory() -> dict[int, int] | None:
    """Video memory per process id, or None without nvidia-smi (blocking: up to 5 s)."""
    out = _query(f"--query-compute-apps={','.join(APP_FIELDS)}")
    return None if out is None else parse_process_memory(out)
