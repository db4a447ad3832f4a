"""The gateway's event listener joins the scheduler group at once, however long the machine is up.

Found on a freshly booted GPU machine: the monotonic clock counts from boot, and a listener that
took "0.0" for "never joined" did not join for the machine's first hour, so no runner event reached
the scheduler there.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from llamaproxy.events import SCHEDULER_GROUP
from runners import effects


class FakeLayer:
    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.events = events

    async def new_channel(self) -> str:
        return "specific.abc!1"

    async def group_add(self, group: str, channel: str) -> None:
        self.calls.append(("group_add", group, channel))

    async def receive(self, channel: str) -> dict[str, Any]:
        self.calls.append(("receive", channel))
        if not self.events:
            await asyncio.Event().wait()  # nothing more: block like the real layer
        return self.events.pop(0)


@pytest.mark.parametrize("uptime", [3.0, 1_000_000.0])
async def test_the_listener_joins_the_group_before_it_receives(monkeypatch, uptime: float) -> None:
    layer = FakeLayer([{"type": "runner.state", "model": "a", "state": "ready", "attempt": "x"}])
    monkeypatch.setattr(effects, "get_channel_layer", lambda: layer)
    monkeypatch.setattr(effects.time, "monotonic", lambda: uptime)
    seen: list[dict[str, Any]] = []
    listener = effects.CeleryEffects()
    task = asyncio.ensure_future(listener.listen(seen.append))
    for _ in range(20):
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert layer.calls[0] == ("group_add", SCHEDULER_GROUP, "specific.abc!1")
    assert [event["model"] for event in seen] == ["a"]
    assert listener._subscribed is not None and listener._subscribed.is_set()
