"""The dashboard's live channel: one WebSocket route, one group, events relayed as JSON.

Besides the group's events, a client may ask for the live log of one runner
(`{"type": "log.subscribe", "model": ...}`): the consumer tails that runner's log file while
the client stays subscribed, sending the last lines first and then each new line.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from llamaproxy.events import STATUS_GROUP
from llamaproxy.runtime import on_settings_changed

if TYPE_CHECKING:
    pass

LOG_TAIL_INTERVAL_S = 0.3
LOG_INITIAL_LINES = 200
LOG_MAX_CHUNK = 256 * 1024
_publishing: set[asyncio.Task] = set()


def runner_log_path(model: str) -> Path:
    try:
        from runners.agent import runner_log_path as agent_log_path
    except ImportError:  # the same naming as the node agent's
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", model).strip("._") or "model"
        return Path(settings.RUNNER_LOG_DIR) / f"{safe}.log"
    return agent_log_path(model)


def last_lines(path: Path, count: int) -> tuple[list[str], int]:
    """The last `count` lines of a file and the offset its end was at."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - LOG_MAX_CHUNK))
            data = handle.read()
    except FileNotFoundError:
        return [], 0
    lines = data.decode(errors="replace").splitlines()
    return lines[-count:], size


def read_from(path: Path, offset: int) -> tuple[list[str], int]:
    """Complete lines written after `offset`; a file that shrank (a restart truncates it) is read anew."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return [], 0
    if size < offset:
        offset = 0
    if size == offset:
        return [], offset
    with path.open("rb") as handle:
        handle.seek(offset)
        data = handle.read(min(size - offset, LOG_MAX_CHUNK))
    end = data.rfind(b"\n")
    if end < 0:
        return [], offset
    return data[: end + 1].decode(errors="replace").splitlines(), offset + end + 1


# Dashboards connected to this process; per-request events are published only while one is.
connected_dashboards = 0


def dashboards_watching() -> bool:
    return connected_dashboards > 0


class StatusConsumer(AsyncJsonWebsocketConsumer):
    tail_task: asyncio.Task | None = None
    counted = False

    async def connect(self) -> None:
        global connected_dashboards
        user = self.scope.get("user")
        if user is None or not user.is_authenticated or not user.is_staff:
            await self.close(code=4401)
            return
        await self.channel_layer.group_add(STATUS_GROUP, self.channel_name)
        await self.accept()
        connected_dashboards += 1
        self.counted = True

    async def disconnect(self, code: int) -> None:
        global connected_dashboards
        if self.counted:
            connected_dashboards -= 1
            self.counted = False
        self._stop_tail()
        await self.channel_layer.group_discard(STATUS_GROUP, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if not isinstance(content, dict):
            return
        kind = content.get("type")
        if kind == "log.subscribe" and isinstance(content.get("model"), str):
            lines = content.get("lines")
            count = lines if isinstance(lines, int) and 0 <= lines <= 2000 else LOG_INITIAL_LINES
            self._stop_tail()
            self.tail_task = asyncio.ensure_future(self._tail(content["model"], count))
        elif kind == "log.unsubscribe":
            self._stop_tail()
        elif kind == "ping":
            await self.send_json({"type": "pong"})

    def _stop_tail(self) -> None:
        if self.tail_task is not None:
            self.tail_task.cancel()
            self.tail_task = None

    async def _tail(self, model: str, count: int) -> None:
        path = runner_log_path(model)
        lines, offset = await asyncio.to_thread(last_lines, path, count)
        await self.send_json({"type": "log.lines", "model": model, "lines": lines, "path": str(path)})
        while True:
            await asyncio.sleep(LOG_TAIL_INTERVAL_S)
            before = offset
            lines, offset = await asyncio.to_thread(read_from, path, offset)
            if offset < before:
                await self.send_json({"type": "log.reset", "model": model})
            if lines:
                await self.send_json({"type": "log.line", "model": model, "lines": lines})

    async def forward(self, event: dict[str, Any]) -> None:
        await self.send_json(event)

    async def settings_changed(self, event: dict[str, Any]) -> None:
        on_settings_changed(event)  # this process may cache limits too
        await self.send_json(event)

    # Each event type the status group carries is forwarded unchanged.
    runner_state = forward
    runner_progress = forward
    runner_memory = forward
    request_done = forward
    log_line = forward
    catalog_changed = forward
