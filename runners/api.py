"""Management API routes for runners (mounted under /api/manage/ by llamaproxy.manage_api)."""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpRequest
from ninja import Router, Schema
from ninja.errors import HttpError

from runners import scheduler
from runners.agent import runner_log_path, tail_lines
from runners.errors import ModelNotFound, SchedulerError

router = Router(tags=["runners"])


class LoadIn(Schema):
    ttl: int | None = None


def _http_error(exc: SchedulerError) -> HttpError:
    return HttpError(exc.status, exc.message)


@router.get("runners")
async def list_runners(request: HttpRequest) -> list[dict[str, Any]]:
    return await scheduler.status_async()


@router.post("runners/unload-all")
async def unload_all(request: HttpRequest) -> dict[str, Any]:
    return {"unloaded": await scheduler.unload_all()}


@router.post("runners/{model}/load")
async def load(request: HttpRequest, model: str, payload: LoadIn | None = None) -> dict[str, Any]:
    try:
        return await scheduler.load(model, ttl=payload.ttl if payload else None)
    except SchedulerError as exc:
        raise _http_error(exc) from None


@router.post("runners/{model}/unload")
async def unload(request: HttpRequest, model: str) -> dict[str, Any]:
    try:
        return {"model": model, "unloaded": await scheduler.unload(model)}
    except SchedulerError as exc:
        raise _http_error(exc) from None


@router.post("runners/{model}/restart")
async def restart(request: HttpRequest, model: str) -> dict[str, Any]:
    try:
        return await scheduler.restart(model)
    except SchedulerError as exc:
        raise _http_error(exc) from None


@router.get("runners/{model}/log")
async def log_tail(request: HttpRequest, model: str, lines: int = 200) -> dict[str, Any]:
    sched = scheduler.get_scheduler()
    await sched.ensure_started()
    entry = sched.catalog.resolve(model)
    if entry is None:
        await sched.refresh_catalog()
        entry = sched.catalog.resolve(model)
    if entry is None:
        raise _http_error(ModelNotFound(model))
    path = runner_log_path(entry.name)
    text = await sync_to_async(tail_lines, thread_sensitive=False)(path, max(1, min(lines, 10000)))
    return {"model": entry.name, "path": str(path), "lines": text}
