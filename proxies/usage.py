"""Usage history, written in batches off the request path.

A finished request is noted with one list append. Half a second later (or at once past 200
requests) the noted requests become usage rows and Prometheus observations, a batch at a time
in the event loop, and the rows are written in a worker thread; at process exit whatever is left
is written. On the request path the gateway's code runs on caches that the runner's generation
has just emptied, so each line of code it touches there is paid for in cache misses; in a batch
the same code stays in cache from one request to the next. Measured in place on the gateway
benchmark's short completions (thread CPU time around the calls): making the row and the
observations per request cost 48-51 µs; noting the request costs 8-9 µs, and its share of the
batch 7-8 µs. A flush is one `executemany` INSERT: Django's bulk_create compiled every row's
every field through the ORM, which was a tenth of the gateway's CPU per request.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading
import time
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta

from asgiref.sync import async_to_sync
from django.db import close_old_connections, connection, transaction
from django.utils import timezone

from llamaproxy.consumers import dashboards_watching
from llamaproxy.events import publish
from proxies import metrics
from proxies.models import ApiKey, UsageRecord
from proxies.relay import RelayContext

log = logging.getLogger(__name__)

FLUSH_DELAY = 0.5
FLUSH_BATCH = 200


@dataclass(slots=True)
class PendingRow:
    """A usage row waiting for the next flush; its fields are UsageRecord's columns."""

    created_at: datetime
    face: str
    endpoint: str
    model: str
    client_address: str
    api_key_id: int | None
    status: int
    stream: bool
    prompt_tokens: int | None
    completion_tokens: int | None
    cached_tokens: int | None
    ttft_ms: float | None
    prefill_tps: float | None
    decode_tps: float | None
    duration_ms: float
    load_ms: float | None
    audio_seconds: float | None
    error: str
    api_key_name: str = ""
    id: int | None = None  # set once stored


COLUMNS = tuple(f.name for f in fields(PendingRow) if f.name != "id")


def insert_sql() -> str:
    """INSERT for COLUMNS, checked against the model so that a new NOT NULL column is not missed."""
    meta = UsageRecord._meta
    columns = {field.attname: field.column for field in meta.concrete_fields if not field.primary_key}
    missing = set(columns) - set(COLUMNS)
    if missing:
        raise RuntimeError(f"usage rows lack columns {sorted(missing)}")
    quote = connection.ops.quote_name
    names = ", ".join(quote(columns[name]) for name in COLUMNS)
    marks = ", ".join(["%s"] * len(COLUMNS))
    return f"INSERT INTO {quote(meta.db_table)} ({names}) VALUES ({marks})"


class UsageWriter:
    def __init__(self) -> None:
        self._finished: list[tuple[RelayContext, float, float]] = []  # noted, not made into rows yet
        self._rows: list[PendingRow] = []
        self._lock = threading.Lock()
        self._scheduled = False
        self._keys_used: dict[int, object] = {}
        self._sql: str | None = None

    def record(self, ctx: RelayContext, load_seconds: float = 0.0) -> None:
        """Note a finished request; its row and its metrics are made at the next flush."""
        if ctx.meter.ended is None:  # its duration ends now, not when its row is made
            ctx.meter.ended = time.perf_counter()
        with self._lock:
            self._finished.append((ctx, load_seconds, time.time()))
            noted = len(self._finished)
        self._schedule(immediately=noted >= FLUSH_BATCH)

    def settle(self) -> None:
        """The requests noted so far become rows waiting to be written, and are observed in the
        metrics (which call this before they are read, so they are never behind)."""
        with self._lock:
            finished, self._finished = self._finished, []
        if not finished:
            return
        rows = []
        keys_used = {}
        for ctx, load_seconds, ended_at in finished:
            metrics.observe(ctx)
            rows.append(_row(ctx, load_seconds, ended_at))
            if ctx.api_key_id is not None:
                keys_used[ctx.api_key_id] = datetime.fromtimestamp(ended_at, UTC)
        with self._lock:
            self._rows.extend(rows)
            self._keys_used.update(keys_used)

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
        self.settle()
        stored = await asyncio.to_thread(self._store)
        # Announced once stored, so a dashboard that fetches the history after this event finds them;
        # only while a dashboard is connected (each event costs several Redis round trips).
        if dashboards_watching():
            for row in stored:
                await publish(usage_event(row))

    def flush(self) -> int:
        """Write what is buffered now (outside the gateway's loop: commands, tests, exit)."""
        self.settle()
        stored = self._store()
        if stored:
            async_to_sync(_announce)([usage_event(row) for row in stored])
        return len(stored)

    def _store(self) -> list[PendingRow]:
        with self._lock:
            rows, self._rows = self._rows, []
            keys, self._keys_used = self._keys_used, {}
        if not rows:
            return []
        try:
            self._insert(rows)
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

    def store_at_exit(self) -> None:
        self.settle()
        self._store()

    def _insert(self, rows: list[PendingRow]) -> None:
        """One transaction; SQLite hands out consecutive rowids to it, so each row learns its id."""
        if self._sql is None:
            self._sql = insert_sql()
        adapt = connection.ops.adapt_datetimefield_value
        params = [
            tuple(adapt(row.created_at) if name == "created_at" else getattr(row, name) for name in COLUMNS)
            for row in rows
        ]
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.executemany(self._sql, params)
            cursor.execute("SELECT last_insert_rowid()")
            last = cursor.fetchone()[0]
        first = last - len(rows) + 1
        for offset, row in enumerate(rows):
            row.id = first + offset


def _row(ctx: RelayContext, load_seconds: float, ended_at: float) -> PendingRow:
    """The usage row of a request that ended at `ended_at` (a time.time() reading)."""
    meter = ctx.meter
    duration_ms = meter.duration_ms
    return PendingRow(
        created_at=datetime.fromtimestamp(ended_at, UTC) - timedelta(milliseconds=duration_ms),
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
        duration_ms=duration_ms,
        load_ms=load_seconds * 1000 if load_seconds else None,
        audio_seconds=ctx.audio_seconds,
        error=ctx.error[:2000],
    )


EVENT_FIELDS = (
    "id", "face", "endpoint", "model", "client_address", "api_key_id", "status", "stream", "prompt_tokens",
    "completion_tokens", "cached_tokens", "ttft_ms", "prefill_tps", "decode_tps", "duration_ms", "load_ms",
    "audio_seconds",
)  # fmt: skip


def usage_event(row: PendingRow | UsageRecord) -> dict:
    """The `request.done` event of a stored usage row (the dashboard's live Activity feed)."""
    event = {"type": "request.done", "created_at": row.created_at.isoformat(), "error": row.error[:500]}
    event.update({name: getattr(row, name) for name in EVENT_FIELDS})
    return event


async def _announce(events: list[dict]) -> None:
    for event in events:
        await publish(event)


usage_writer = UsageWriter()
atexit.register(usage_writer.store_at_exit)  # at exit: store what is left; nobody is listening any more


def prune_usage(retention_days: int) -> int:
    """Usage rows, and the conversations kept for `previous_response_id`, older than the
    retention; the number of usage rows deleted."""
    from proxies.models import StoredChat

    if retention_days <= 0:
        return 0
    cutoff = timezone.now() - timedelta(days=retention_days)
    StoredChat.objects.filter(created_at__lt=cutoff).delete()
    deleted, _ = UsageRecord.objects.filter(created_at__lt=cutoff).delete()
    return deleted
