"""Usage history, written in batches off the request path.

Each finished request appends a row to an in-memory buffer; a flush runs half a second later
(or at once past 200 rows) in a worker thread, and at process exit whatever is left is written.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading
from datetime import timedelta

from asgiref.sync import async_to_sync
from django.db import close_old_connections
from django.utils import timezone

from llamaproxy.consumers import dashboards_watching
from llamaproxy.events import publish
from proxies.models import ApiKey, UsageRecord
from proxies.relay import RelayContext

log = logging.getLogger(__name__)

FLUSH_DELAY = 0.5
FLUSH_BATCH = 200


class UsageWriter:
    def __init__(self) -> None:
        self._rows: list[UsageRecord] = []
        self._lock = threading.Lock()
        self._scheduled = False
        self._keys_used: dict[int, object] = {}

    def record(self, ctx: RelayContext, load_seconds: float = 0.0) -> None:
        meter = ctx.meter
        now = timezone.now()
        row = UsageRecord(
            created_at=now - timedelta(milliseconds=meter.duration_ms),
            face=ctx.face,
            endpoint=ctx.endpoint,
            model=ctx.model,
            client_address=ctx.client_address,
            api_key_id=ctx.api_key_id,
            status=ctx.status or 0,
            stream=ctx.stream,
            prompt_tokens=meter.prompt_tokens,
            completion_tokens=meter.completion_tokens,
            cached_tokens=meter.cached_tokens,
            ttft_ms=meter.ttft_ms,
            prefill_tps=meter.prefill_tps,
            decode_tps=meter.decode_tps,
            duration_ms=meter.duration_ms,
            load_ms=load_seconds * 1000 if load_seconds else None,
            audio_seconds=ctx.audio_seconds,
            error=ctx.error[:2000],
        )
        with self._lock:
            self._rows.append(row)
            if ctx.api_key_id is not None:
                self._keys_used[ctx.api_key_id] = now
            pending = len(self._rows)
        self._schedule(immediately=pending >= FLUSH_BATCH)

    def _schedule(self, immediately: bool) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()  # called outside the gateway's loop (tests, commands): write now
            return
        if self._scheduled and not immediately:
            return
        self._scheduled = True
        loop.call_later(0 if immediately else FLUSH_DELAY, lambda: loop.create_task(self._flush_async()))

    async def _flush_async(self) -> None:
        self._scheduled = False
        stored = await asyncio.to_thread(self._store)
        # Announced once stored, so a dashboard that fetches the history after this event finds them;
        # only while a dashboard is connected (each event costs several Redis round trips).
        if dashboards_watching():
            for row in stored:
                await publish(usage_event(row))

    def flush(self) -> int:
        """Write what is buffered now (outside the gateway's loop: commands, tests, exit)."""
        stored = self._store()
        if stored:
            async_to_sync(_announce)([usage_event(row) for row in stored])
        return len(stored)

    def _store(self) -> list[UsageRecord]:
        with self._lock:
            rows, self._rows = self._rows, []
            keys, self._keys_used = self._keys_used, {}
        if not rows:
            return []
        try:
            UsageRecord.objects.bulk_create(rows, batch_size=500)
            for key_id, when in keys.items():
                ApiKey.objects.filter(pk=key_id).update(last_used_at=when)
        except Exception:
            log.exception("could not write %d usage rows; keeping them for the next flush", len(rows))
            with self._lock:
                self._rows[:0] = rows
            return []
        finally:
            close_old_connections()
        return rows


EVENT_FIELDS = (
    "id", "face", "endpoint", "model", "client_address", "api_key_id", "status", "stream", "prompt_tokens",
    "completion_tokens", "cached_tokens", "ttft_ms", "prefill_tps", "decode_tps", "duration_ms", "load_ms",
    "audio_seconds",
)  # fmt: skip


def usage_event(row: UsageRecord) -> dict:
    """The `request.done` event of a stored usage row (the dashboard's live Activity feed)."""
    event = {"type": "request.done", "created_at": row.created_at.isoformat(), "error": row.error[:500]}
    event.update({name: getattr(row, name) for name in EVENT_FIELDS})
    return event


async def _announce(events: list[dict]) -> None:
    for event in events:
        await publish(event)


usage_writer = UsageWriter()
atexit.register(usage_writer._store)  # at exit: store what is left; nobody is listening any more


def prune_usage(retention_days: int) -> int:
    if retention_days <= 0:
        return 0
    cutoff = timezone.now() - timedelta(days=retention_days)
    deleted, _ = UsageRecord.objects.filter(created_at__lt=cutoff).delete()
    return deleted
