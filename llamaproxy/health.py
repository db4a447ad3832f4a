"""Health of the parts llamaproxy needs: database, Redis, the Celery worker, llama-server."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import redis
import redis.asyncio as aioredis
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection

_async_clients: dict[int, aioredis.Redis] = {}


def redis_client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)


def async_redis_client() -> aioredis.Redis:
    """One client per event loop (daphne has one; tests may make several)."""
    loop_id = id(asyncio.get_running_loop())
    client = _async_clients.get(loop_id)
    if client is None:
        client = aioredis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
        _async_clients[loop_id] = client
    return client


def _check_database() -> dict[str, Any]:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return {"ok": True}
    except Exception as exc:
        return {"ok": False, "error": str(exc)}
    finally:
        connection.close()


async def _check_redis() -> dict[str, Any]:
    try:
        await asyncio.wait_for(async_redis_client().ping(), 2)
        return {"ok": True, "url": settings.REDIS_URL, "embedded": settings.REDIS_EMBEDDED}
    except Exception as exc:
        return {"ok": False, "url": settings.REDIS_URL, "error": str(exc) or type(exc).__name__}


async def _check_worker() -> dict[str, Any]:
    try:
        raw = await asyncio.wait_for(async_redis_client().get(settings.WORKER_HEARTBEAT_KEY), 2)
    except Exception as exc:
        return {"ok": False, "error": f"Redis unreachable: {exc or type(exc).__name__}"}
    if raw is None:
        return {"ok": False, "error": "no heartbeat from the Celery worker"}
    age = time.time() - float(raw)
    ok = age < settings.WORKER_HEARTBEAT_TTL
    result: dict[str, Any] = {"ok": ok, "last_heartbeat_seconds_ago": round(age, 1)}
    if not ok:
        result["error"] = f"last heartbeat {age:.0f}s ago"
    return result


def _check_llama_server() -> dict[str, Any]:
    from runners.provisioning import binary_version, installed_binary

    binary = installed_binary("llama-server")
    if binary is None:
        return {"ok": False, "error": "llama-server is not installed (run `manage.py install_llama_server`)"}
    try:
        return {"ok": True, "path": str(binary), "version": binary_version(binary)}
    except Exception as exc:
        return {"ok": False, "path": str(binary), "error": str(exc)}


async def collect_health() -> tuple[bool, dict[str, Any]]:
    database, llama = await asyncio.gather(
        sync_to_async(_check_database, thread_sensitive=False)(),
        sync_to_async(_check_llama_server, thread_sensitive=False)(),
    )
    redis_state, worker = await asyncio.gather(_check_redis(), _check_worker())
    components = {"database": database, "redis": redis_state, "worker": worker, "llama_server": llama}
    failing = [name for name, state in components.items() if not state["ok"]]
    healthy = not failing
    body: dict[str, Any] = {"status": "ok" if healthy else "error", "components": components}
    if failing:
        body["failing"] = failing
    return healthy, body
