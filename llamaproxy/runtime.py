"""The limits in force: the stored overrides (RuntimeSettings) over the environment's values.

RuntimeSettings is the one place runtime limits live: the dashboard edits it (settings_api), an
import of the seed configs fills it (models_catalog.importer), backups carry it.

`current_limits()` is cheap (a cached value) and never blocks an event loop: inside a running
loop a cache miss answers with the last value known (the environment's before the first read)
and refreshes in a worker thread; `current_limits_async()` awaits the fresh value instead. A save
of RuntimeSettings (after its transaction commits), or a `settings.changed` event from another
process, invalidates the cache.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from django.conf import settings

from llamaproxy.config import parse_duration, parse_size


@dataclass(frozen=True)
class Limits:
    max_loaded_models: int
    memory_budget: int | None
    default_ttl: int
    default_model: str | None
    request_timeout: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


LIMIT_FIELDS = tuple(Limits.__dataclass_fields__)

_lock = threading.Lock()
_cached: Limits | None = None
_last_known: Limits | None = None
_generation = 0  # bumped by every invalidation: a read that began before one is not cached
_refreshing: Future | None = None
_reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="runtime-limits")


class LimitError(ValueError):
    """A limit value that cannot be stored; `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def clean_limit(name: str, value: Any) -> Any:
    """A limit value in stored form (None = the environment's value applies), or LimitError."""
    if name not in LIMIT_FIELDS:
        raise LimitError(name, f"{name}: not a runtime setting ({', '.join(LIMIT_FIELDS)})")
    if value is None or value == "":
        return None
    try:
        if isinstance(value, bool):
            raise ValueError("must be a number, not true/false")
        if name == "max_loaded_models":
            if isinstance(value, float) and not value.is_integer():
                raise ValueError("must be a whole number")
            number = int(value)
            if number < 1:
                raise ValueError("must be at least 1")
            return number
        if name == "memory_budget":
            budget = int(value) if isinstance(value, int) else parse_size(str(value))
            if budget < 1:
                raise ValueError("must be greater than zero")
            return budget
        if name in ("default_ttl", "request_timeout"):
            seconds = value if isinstance(value, int | float) else parse_duration(str(value))
            if seconds < 0 or (name == "request_timeout" and seconds == 0):
                raise ValueError(
                    "must be greater than zero" if name == "request_timeout" else "must be 0 or more"
                )
            return float(seconds) if name == "request_timeout" else int(seconds)
        if name == "default_model":
            text = str(value).strip()
            if len(text) > 200:
                raise ValueError("at most 200 characters")
            return text or None
    except (TypeError, ValueError) as exc:
        raise LimitError(name, f"{name}: {exc}") from None
    return value


def env_limits() -> Limits:
    """The environment's values (LLAMAPROXY_*), the defaults that overrides replace."""
    return Limits(
        max_loaded_models=settings.LLAMAPROXY_MAX_LOADED_MODELS,
        memory_budget=settings.LLAMAPROXY_MEMORY_BUDGET,
        default_ttl=settings.LLAMAPROXY_DEFAULT_TTL,
        default_model=settings.LLAMAPROXY_DEFAULT_MODEL,
        request_timeout=settings.LLAMAPROXY_REQUEST_TIMEOUT,
    )


def overrides() -> dict[str, Any]:
    """The stored overrides, None where the environment's value applies (sync ORM)."""
    from llamaproxy.models import RuntimeSettings

    row = RuntimeSettings.objects.filter(pk=1).first()
    return {name: getattr(row, name) if row else None for name in LIMIT_FIELDS}


def merge(base: Limits, stored: dict[str, Any]) -> Limits:
    values = base.as_dict()
    for name, value in stored.items():
        if name in values and value is not None and value != "":
            values[name] = value
    return Limits(**values)


def _read_limits() -> Limits:
    from django.db import close_old_connections

    close_old_connections()
    try:
        return merge(env_limits(), overrides())
    finally:
        close_old_connections()


def _store(limits: Limits, generation: int) -> Limits:
    """Cache a value read while `generation` was current (an invalidation since wins)."""
    global _cached, _last_known
    with _lock:
        _last_known = limits
        if generation == _generation:
            _cached = limits
    return limits


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _refresh_in_background() -> None:
    """Start one read in the worker thread unless one is already on its way."""
    global _refreshing
    with _lock:
        if _refreshing is not None and not _refreshing.done():
            return
        generation = _generation
        _refreshing = _reader.submit(lambda: _store(_read_limits(), generation))


def current_limits() -> Limits:
    """The limits in force. Never blocks an event loop: there, a cache miss answers with the last
    value known (the environment's before the first read) and refreshes in the background."""
    limits = _cached
    if limits is not None:
        return limits
    if _in_event_loop():
        _refresh_in_background()
        return _last_known or env_limits()
    with _lock:
        generation = _generation
    return _store(_read_limits(), generation)


async def current_limits_async() -> Limits:
    """The limits in force, read from the database on a cache miss (in a worker thread)."""
    limits = _cached
    if limits is not None:
        return limits
    with _lock:
        generation = _generation
    read = await asyncio.wrap_future(_reader.submit(_read_limits))
    return _store(read, generation)


def invalidate_limits() -> None:
    global _cached, _generation
    with _lock:
        _cached = None
        _generation += 1


def on_settings_changed(event: dict[str, Any] | None = None) -> None:
    """Handler for the `settings.changed` event (this or another process saved new limits)."""
    invalidate_limits()


def settings_changed_event(reason: str = "") -> dict[str, Any]:
    """The `settings.changed` event: the limits in force now (sync ORM)."""
    invalidate_limits()
    event: dict[str, Any] = {"type": "settings.changed", "settings": current_limits().as_dict()}
    if reason:
        event["reason"] = reason
    return event


def publish_settings_changed(reason: str = "") -> None:
    """Tell the scheduler and the dashboards that the limits changed (sync code, after commit)."""
    from llamaproxy.events import SCHEDULER_GROUP, STATUS_GROUP, publish_sync

    publish_sync(settings_changed_event(reason), (STATUS_GROUP, SCHEDULER_GROUP))
