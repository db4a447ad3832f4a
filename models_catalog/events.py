"""The catalog's one event: `catalog.changed`, for the scheduler's snapshot and the dashboards."""

from __future__ import annotations

from typing import Any

from llamaproxy.events import SCHEDULER_GROUP, STATUS_GROUP, publish_sync


def catalog_changed(reason: str, **details: Any) -> None:
    """Tell the gateway and dashboards the catalog changed; never raises (the bus may be down)."""
    publish_sync(
        {"type": "catalog.changed", "reason": reason, **details}, groups=(STATUS_GROUP, SCHEDULER_GROUP)
    )
