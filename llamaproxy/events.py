"""Events sent over the channel layer: runner state, load progress, requests, log lines.

Every payload is a TypedDict whose `type` names the consumer method that handles it.
"""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

STATUS_GROUP = "status"  # dashboards (the /ws/status WebSocket)
SCHEDULER_GROUP = "scheduler"  # the gateway's scheduler

log = logging.getLogger(__name__)


async def publish(event: dict[str, Any], groups: tuple[str, ...] = (STATUS_GROUP,)) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    for group in groups:
        try:
            await layer.group_send(group, event)
        except Exception:  # the event bus being down must never fail the work that reports on it
            log.warning("could not publish %s to %s", event.get("type"), group, exc_info=True)


def publish_sync(event: dict[str, Any], groups: tuple[str, ...] = (STATUS_GROUP,)) -> None:
    async_to_sync(publish)(event, groups)
