"""Events sent over the channel layer: runner state, load progress, requests, log lines.

Every payload is a TypedDict whose `type` names the consumer method that handles it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings

STATUS_GROUP = "status"  # dashboards (the /ws/status WebSocket)
SCHEDULER_GROUP = "scheduler"  # the gateway's scheduler

log = logging.getLogger(__name__)


def _nobody_listening() -> bool:
    """The embedded Redis runs only under `serve`; without it nobody could receive events."""
    return settings.REDIS_EMBEDDED and not settings.REDIS_SOCKET.exists()


LocalListener = Callable[[dict[str, Any]], None]
_local_listeners: list[LocalListener] = []


def listen_locally(listener: LocalListener) -> None:
    """Have `listener` called with every event published in this process, at once, in the
    publishing thread: the channel layer brings events back a moment later, so an in-process
    cache of what was written (the gateway's catalog view, the scheduler's catalog) marks itself
    stale here, before the write's response goes out. It must be quick and thread-safe."""
    _local_listeners.append(listener)


async def publish(event: dict[str, Any], groups: tuple[str, ...] = (STATUS_GROUP,)) -> None:
    for listener in _local_listeners:
        try:
            listener(event)
        except Exception:
            log.exception("a local listener failed on %s", event.get("type"))
    layer = get_channel_layer()
    if layer is None or _nobody_listening():
        return
    for group in groups:
        try:
            await layer.group_send(group, event)
        except Exception as exc:  # the event bus being down must never fail the work that reports on it
            log.warning("could not publish %s to %s: %s", event.get("type"), group, exc)


def publish_sync(event: dict[str, Any], groups: tuple[str, ...] = (STATUS_GROUP,)) -> None:
    async_to_sync(publish)(event, groups)
