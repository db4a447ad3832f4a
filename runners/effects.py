"""The scheduler's real effects: Celery tasks to the node agent, events from the channel layer,
and the database as the record (polled every 0.5 s while waiting, in case an event was lost)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db import close_old_connections

from llamaproxy.events import SCHEDULER_GROUP
from llamaproxy.runtime import Limits as RuntimeLimits
from llamaproxy.runtime import current_limits_async
from runners.scheduler import Recorded, Started, StartFailed
from runners.snapshot import Catalog, CatalogEntry, load_catalog

log = logging.getLogger(__name__)

POLL_S = 0.5  # the database safety net while waiting for an event
PICKUP_LIMIT_S = 30.0  # a start no node agent has claimed by then is reported as such
STOP_LIMIT_S = 60.0
GROUP_RENEW_S = 3600.0  # channels_redis forgets group members after a day
PROBE_TIMEOUT_S = 2.0


def _db(fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        close_old_connections()
        try:
            return fn(*args, **kwargs)
        finally:
            close_old_connections()

    return sync_to_async(wrapped, thread_sensitive=False)


def _row(model_id: int) -> dict[str, Any] | None:
    from runners.models import Runner

    return (
        Runner.objects.filter(model_id=model_id)
        .values("state", "attempt", "host", "port", "pid", "failure_reason", "log_excerpt")
        .first()
    )


def _recorded() -> list[Recorded]:
    from runners.models import Runner, RunnerState

    rows = Runner.objects.select_related("model").filter(
        state__in=[RunnerState.STARTING, RunnerState.READY, RunnerState.STOPPING]
    )
    return [
        Recorded(
            name=row.model.name,
            state=row.state,
            attempt=row.attempt,
            base_url=_base_url(row.host, row.port),
            host=row.host,
            port=row.port,
            pid=row.pid,
            parameters=dict(row.parameters or {}),
            started_at=row.started_at.timestamp() if row.started_at else None,
            ready_at=row.ready_at.timestamp() if row.ready_at else None,
            vram_bytes=row.vram_bytes or 0,
        )
        for row in rows
    ]


def _persist_usage(used: dict[int, float]) -> None:
    from runners.models import Runner

    for model_id, when in used.items():
        Runner.objects.filter(model_id=model_id).update(last_used_at=datetime.fromtimestamp(when, UTC))


def _send(task: str, args: list[Any]) -> None:
    from llamaproxy.celery import app
    from llamaproxy.supervisor import node_queue

    app.send_task(task, args=args, queue=node_queue())


def _base_url(host: str, port: int | None) -> str | None:
    if not port:
        return None
    host = host or "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class CeleryEffects:
    def __init__(self) -> None:
        self._starts: dict[str, asyncio.Future] = {}
        self._stops: dict[int, list[asyncio.Future]] = {}
        self._subscribed: asyncio.Event | None = None
        self._http: httpx.AsyncClient | None = None

    # --- events ---------------------------------------------------------------------------

    async def listen(self, on_event: Callable[[dict[str, Any]], None]) -> None:
        layer = get_channel_layer()
        self._subscribed = self._subscribed or asyncio.Event()
        if layer is None:
            self._subscribed.set()
            return
        # The default prefix on purpose: channels_redis reads every process-local channel that shares
        # a prefix through one receive loop; a second prefix would compete with the dashboard's
        # WebSocket consumers for the layer's single receive lock and starve them.
        channel = await layer.new_channel()
        # None, not 0.0: the monotonic clock counts from boot, so "long ago" would not be long ago
        # on a machine up for less than GROUP_RENEW_S, and the listener would never join the group.
        renewed: float | None = None
        while True:
            try:
                if renewed is None or time.monotonic() - renewed > GROUP_RENEW_S:
                    await layer.group_add(SCHEDULER_GROUP, channel)
                    renewed = time.monotonic()
                    self._subscribed.set()
                event = await layer.receive(channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("scheduler event listener: channel layer error; retrying", exc_info=True)
                renewed = None
                await asyncio.sleep(1.0)
                continue
            self._dispatch(event)
            try:
                on_event(event)
            except Exception:
                log.exception("scheduler failed to handle %s", event.get("type"))

    def _dispatch(self, event: dict[str, Any]) -> None:
        if event.get("type") != "runner.state":
            return
        state = event.get("state")
        future = self._starts.get(event.get("attempt", ""))
        if future is not None and not future.done() and state in ("ready", "failed", "stopped"):
            future.set_result(event)
        if state in ("stopped", "failed"):
            for waiting in self._stops.pop(event.get("model_id", -1), []):
                if not waiting.done():
                    waiting.set_result(event)

    async def _wait_subscribed(self) -> None:
        if self._subscribed is None:
            self._subscribed = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), 5.0)

    # --- start / stop ---------------------------------------------------------------------

    async def start(
        self,
        entry: CatalogEntry,
        attempt: str,
        parameters: dict[str, Any],
        ttl: int | None,
        memory: int,
        stop_first: tuple[CatalogEntry, ...] = (),
    ) -> Started:
        future = asyncio.get_running_loop().create_future()
        self._starts[attempt] = future
        args: list[Any] = [entry.id, attempt, parameters, ttl, memory]
        if stop_first:
            args.append([victim.id for victim in stop_first])  # a swap: one task, stop then start
        try:
            await self._wait_subscribed()
            await asyncio.to_thread(_send, "runners.tasks.start_runner", args)
            event = await self._wait_start(future, entry, attempt)
        finally:
            self._starts.pop(attempt, None)
        if event.get("state") == "ready":
            base_url = _base_url(event.get("host", ""), event.get("port"))
            if base_url:
                return Started(
                    base_url=base_url,
                    host=event.get("host", ""),
                    port=event.get("port"),
                    pid=event.get("pid"),
                )
        if event.get("state") == "stopped":
            raise StartFailed("the runner was stopped while it was starting")
        raise StartFailed(
            event.get("failure_reason") or "llama-server failed to start", event.get("log_excerpt", "")
        )

    async def _wait_start(self, future: asyncio.Future, entry: CatalogEntry, attempt: str) -> dict[str, Any]:
        picked_up_by = time.monotonic() + PICKUP_LIMIT_S
        while True:
            done, _ = await asyncio.wait({future}, timeout=POLL_S)
            if done:
                return future.result()
            row = await _db(_row)(entry.id)
            mine = row is not None and row["attempt"] == attempt
            if mine and row["state"] in ("ready", "failed", "stopped"):
                return {"type": "runner.state", "model": entry.name, **row}
            if not mine and time.monotonic() > picked_up_by:
                raise StartFailed(
                    f"no node agent picked up the start within {PICKUP_LIMIT_S:.0f} s (is the Celery worker running?)"
                )

    async def stop(self, entry: CatalogEntry) -> None:
        future = asyncio.get_running_loop().create_future()
        self._stops.setdefault(entry.id, []).append(future)
        await asyncio.to_thread(_send, "runners.tasks.stop_runner", [entry.id])
        deadline = time.monotonic() + STOP_LIMIT_S
        while time.monotonic() < deadline:
            done, _ = await asyncio.wait({future}, timeout=POLL_S)
            if done:
                return
            row = await _db(_row)(entry.id)
            if row is None or (row["state"] in ("stopped", "failed") and not row["pid"]):
                return
        log.warning("the runner of %s did not report stopped within %.0f s", entry.name, STOP_LIMIT_S)

    # --- records --------------------------------------------------------------------------

    async def load_catalog(self) -> Catalog:
        return await _db(load_catalog)()

    async def recorded(self) -> list[Recorded]:
        return await _db(_recorded)()

    async def probe(self, base_url: str) -> bool:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=PROBE_TIMEOUT_S)
        try:
            return (await self._http.get(base_url + "/health")).status_code == 200
        except httpx.HTTPError:
            return False

    async def persist_usage(self, used: dict[int, float]) -> None:
        await _db(_persist_usage)(used)

    async def limits(self) -> RuntimeLimits:
        return await current_limits_async()
