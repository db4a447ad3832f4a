"""The System page: gateway, worker, Redis and runners; llama-server version; CPU, RAM, GPUs
(where `nvidia-smi` answers) and the disk use of the model folders. Mounted under /api/manage/."""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import psutil
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db.models import Count, Sum
from django.http import HttpRequest
from ninja import Router

from llamaproxy import gpu
from llamaproxy.health import collect_health

router = Router(tags=["system"])

GATEWAY_STARTED = time.time()
psutil.cpu_percent(interval=None)  # the first reading is meaningless; prime it at import


async def gpus() -> list[dict[str, Any]] | None:
    """One entry per NVIDIA GPU, or None where nvidia-smi is absent or does not answer."""
    found = await asyncio.to_thread(gpu.gpus)
    return None if found is None else [entry.as_dict() for entry in found]


def host_state() -> dict[str, Any]:
    memory = psutil.virtual_memory()
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": {
            "count": psutil.cpu_count(),
            "percent": psutil.cpu_percent(interval=None),
            "load_average": list(load) if load else None,
        },
        "memory": {
            "total": memory.total,
            "available": memory.available,
            "used": memory.total - memory.available,
            "percent": memory.percent,
        },
        "gateway": {"pid": os.getpid(), "uptime_seconds": round(time.time() - GATEWAY_STARTED, 1)},
    }


def model_folders() -> list[dict[str, Any]]:
    """Each model folder (`kind` "models"), and the folders of llamaproxy's own model files
    (`downloads`, and `blobs` of `ollama create`): GGUF bytes in the catalog, and the free
    space of its disk."""
    from models_catalog.blobs import blob_dir
    from models_catalog.downloads import downloads_dir
    from models_catalog.models import CatalogModel, ModelFolder

    paths = {str(Path(p)) for p in settings.LLAMAPROXY_MODELS_DIRS}
    paths |= set(ModelFolder.objects.values_list("path", flat=True))
    kinds = {path: "models" for path in paths}
    kinds.setdefault(str(downloads_dir()), "downloads")
    kinds.setdefault(str(blob_dir()), "blobs")
    base_models = CatalogModel.objects.filter(base__isnull=True)
    folders = []
    for path, kind in sorted(kinds.items(), key=lambda item: (item[1] != "models", item[0])):
        prefix = path.rstrip("/") + "/"
        totals = base_models.filter(path__startswith=prefix).aggregate(n=Count("id"), size=Sum("size_bytes"))
        entry: dict[str, Any] = {
            "path": path,
            "kind": kind,
            "exists": Path(path).is_dir(),
            "models": totals["n"] or 0,
            "model_bytes": totals["size"] or 0,
        }
        if entry["exists"]:
            usage = shutil.disk_usage(path)
            entry.update(disk_total=usage.total, disk_used=usage.used, disk_free=usage.free)
        folders.append(entry)
    return folders


async def runner_states() -> list[dict[str, Any]] | None:
    try:
        from runners.scheduler import status_async
    except ImportError:
        return None
    try:
        return await asyncio.wait_for(status_async(), 5)
    except Exception as exc:  # the page must still show the rest
        return [{"model": "", "state": "unknown", "failure_reason": str(exc) or type(exc).__name__}]


@router.get("system", summary="Gateway, worker, Redis, runners, host resources and model folders")
async def system_state(request: HttpRequest) -> dict[str, Any]:
    (healthy, health), runners, gpu_list, folders, host = await asyncio.gather(
        collect_health(),
        runner_states(),
        gpus(),
        sync_to_async(model_folders, thread_sensitive=True)(),
        sync_to_async(host_state, thread_sensitive=False)(),
    )
    return {
        "healthy": healthy,
        "components": health["components"],
        "llama_server": health["components"].get("llama_server"),
        "runners": runners,
        "gpus": gpu_list,
        "model_folders": folders,
        **host,
    }
