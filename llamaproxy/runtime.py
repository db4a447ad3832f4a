"""The limits in force: the dashboard's overrides (RuntimeSettings) over the environment's values.

`current_limits()` is cheap (a cached value); a save of RuntimeSettings, or a `settings.changed`
event from another process, invalidates the cache so the next call reads the database again.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from django.conf import settings


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
_reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="runtime-limits")


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


def _read_limits() -> Limits:
    base = env_limits().as_dict()
    for name, value in overrides().items():
        if value is not None and value != "":
            base[name] = value
    return Limits(**base)


def current_limits() -> Limits:
    """The limits in force. Safe to call from the event loop: a cache miss reads in a thread."""
    global _cached
    limits = _cached
    if limits is not None:
        return limits
    try:
        asyncio.get_running_loop()
        in_loop = True
    except RuntimeError:
        in_loop = False
    # The ORM refuses to run in an event loop's thread; one small SQLite read in a worker is fine.
    limits = _reader.submit(_read_limits).result() if in_loop else _read_limits()
    with _lock:
        _cached = limits
    return limits


def invalidate_limits() -> None:
    global _cached
    with _lock:
        _cached = None


def on_settings_changed(event: dict[str, Any] | None = None) -> None:
    """Handler for the `settings.changed` event (another process saved new limits)."""
    invalidate_limits()
