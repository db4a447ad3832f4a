"""GPU offload through the real stack: a CUDA build of llama-server on an NVIDIA GPU.

Skipped where there is none (CI has no GPU); run on a GPU machine after
`manage.py install_llama_server`, which builds for CUDA there by itself (LLAMAPROXY_BUILD_BACKEND=auto).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx
import pytest

from llamaproxy import gpu
from models_catalog.tiny_model import write_tiny_model

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def cuda_devices(binary: Path) -> list[str]:
    """The CUDA devices this llama-server build sees (`--list-devices`), [] for a CPU build."""
    done = subprocess.run([str(binary), "--list-devices"], capture_output=True, text=True, timeout=60)
    return [
        line.strip() for line in (done.stdout + done.stderr).splitlines() if line.strip().startswith("CUDA")
    ]


@pytest.fixture(scope="module")
def cuda_binary(llama_server_binary: Path) -> Path:
    if not gpu.gpus():
        pytest.skip("no NVIDIA GPU answers nvidia-smi here")
    if not cuda_devices(llama_server_binary):
        pytest.skip(f"{llama_server_binary} is not a CUDA build (LLAMAPROXY_BUILD_BACKEND=cpu, or no nvcc)")
    return llama_server_binary


def wait_for(predicate, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.25)
    return predicate()


def test_an_offloaded_runner_shows_its_gpu_memory_everywhere(make_stack, cuda_binary: Path) -> None:
    def setup(stack) -> None:
        write_tiny_model(stack.models_dir / "tiny-gpu.gguf", size="small", name="tiny-gpu", seed=4)
        stack.prepare_catalog()

    stack = make_stack(setup=setup)
    ollama = httpx.Client(base_url=stack.url("ollama"), timeout=120)
    answer = ollama.post(
        "/api/generate",
        json={
            "model": "tiny-gpu",
            "prompt": "hello",
            "stream": False,
            "keep_alive": "5m",
            "options": {"num_gpu": 99, "num_predict": 8, "temperature": 0},
        },
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["eval_count"] > 0

    # The runner really runs on the GPU: nvidia-smi lists its process with memory.
    runners = httpx.get(stack.url("dashboard") + "/api/manage/runners", headers=stack.admin_headers()).json()
    runner = next(r for r in runners if r["model"] == "tiny-gpu")
    assert runner["parameters"].get("n_gpu_layers") == 99
    used = gpu.process_memory() or {}
    assert used.get(runner["pid"], 0) > 0, f"nvidia-smi does not list runner pid {runner['pid']}: {used}"

    # Ollama's /api/ps, the manage API and the System page carry the measured VRAM.
    def ps_vram() -> int:
        models = ollama.get("/api/ps").json()["models"]
        return next((m["size_vram"] for m in models if m["name"] == "tiny-gpu:latest"), 0)

    vram = wait_for(ps_vram)
    assert vram > 0
    assert abs(vram - (gpu.process_memory() or {}).get(runner["pid"], 0)) <= 64 * 1024**2
    system = httpx.get(stack.url("dashboard") + "/api/manage/system", headers=stack.admin_headers()).json()
    assert system["gpus"] and system["gpus"][0]["compute_cap"]
    assert next(r for r in system["runners"] if r["model"] == "tiny-gpu")["size_vram"] == vram

    # Unloaded: the process and its GPU memory are gone.
    unload = ollama.post("/api/generate", json={"model": "tiny-gpu", "prompt": "", "keep_alive": 0})
    assert unload.status_code == 200
    assert wait_for(lambda: runner["pid"] not in (gpu.process_memory() or {}))
    assert wait_for(lambda: ps_vram() == 0)
