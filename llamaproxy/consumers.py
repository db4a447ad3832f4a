"""The dashboard's live channel: one WebSocket route, one group, events relayed as JSON."""

from __future__ import annotations

from typing import Any

from channels.generic.websocket import AsyncJsonWebsocketConsumer

from llamaproxy.events import STATUS_GROUP


class StatusConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        await self.channel_layer.group_add(STATUS_GROUP, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(STATUS_GROUP, self.channel_name)

    async def forward(self, event: dict[str, Any]) -> None:
        await self.send_json(event)

    # Each event type the status group carries is forwarded unchanged.
    runner_state = forward
    runner_progress = forward
    request_done = forward
    log_line = forward
    catalog_changed = forward
