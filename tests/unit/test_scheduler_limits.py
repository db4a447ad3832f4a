"""`current_limits()` inside a running event loop: never blocks it, refreshes in the background."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest

from llamaproxy import runtime
from llamaproxy.runtime import Limits, current_limits, current_limits_async, invalidate_limits


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    invalidate_limits()
    runtime._last_known = None
    yield
    invalidate_limits()
    runtime._last_known = None


def stored(**changes: object) -> Limits:
    return runtime.merge(runtime.env_limits(), dict(changes))


async def test_a_cache_miss_in_the_loop_answers_at_once_and_refreshes_in_the_background(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    release = threading.Event()

    def slow_read() -> Limits:
        release.wait(5)
        return stored(max_loaded_models=7)

    monkeypatch.setattr(runtime, "_read_limits", slow_read)
    began = time.monotonic()
    first = current_limits()
    assert time.monotonic() - began < 0.1  # the loop was not held up by the read
    assert first == runtime.env_limits()  # nothing known yet: the environment's values
    release.set()
    for _ in range(100):
        await asyncio.sleep(0.01)
        if current_limits().max_loaded_models == 7:
            break
    assert current_limits().max_loaded_models == 7


async def test_after_an_invalidation_the_loop_gets_the_last_known_value_until_the_refresh(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runtime, "_read_limits", lambda: stored(default_ttl=30))
    assert (await current_limits_async()).default_ttl == 30
    release = threading.Event()

    def slow_read() -> Limits:
        release.wait(5)
        return stored(default_ttl=90)

    monkeypatch.setattr(runtime, "_read_limits", slow_read)
    invalidate_limits()
    assert current_limits().default_ttl == 30  # last known, not the environment's
    release.set()
    assert (await current_limits_async()).default_ttl == 90


async def test_a_read_that_began_before_an_invalidation_is_not_cached(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reading = threading.Event()
    release = threading.Event()

    def old_read() -> Limits:
        reading.set()
        release.wait(5)
        return stored(max_loaded_models=2)

    monkeypatch.setattr(runtime, "_read_limits", old_read)
    pending = asyncio.ensure_future(current_limits_async())
    await asyncio.to_thread(reading.wait, 5)
    invalidate_limits()  # a save committed while the old value was being read
    release.set()
    assert (await pending).max_loaded_models == 2
    monkeypatch.setattr(runtime, "_read_limits", lambda: stored(max_loaded_models=5))
    assert (await current_limits_async()).max_loaded_models == 5
