"""The scheduler's decisions with fake effects: no processes, no Redis, no sleeps.

Starts and stops are recorded by FakeEffects; a start can be held open with a future the test
resolves; TTL timers are captured and fired by hand.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from llamaproxy.runtime import Limits
from runners.errors import (
    ModelDisabled,
    ModelFileUnavailable,
    ModelNotFound,
    ModelUnavailable,
    QueueTimeout,
)
from runners.scheduler import Recorded, Scheduler, Started, StartFailed
from runners.snapshot import Catalog, CatalogEntry


class FakeTimer:
    def __init__(self, delay: float, callback: Callable[[], None]) -> None:
        self.delay = delay
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeEffects:
    def __init__(self, entries: list[CatalogEntry], recorded: list[Recorded] | None = None) -> None:
        self.catalog = Catalog(
            entries={e.name: e for e in entries},
            aliases={alias: e.name for e in entries for alias in e.aliases},
        )
        self.recorded_runners = recorded or []
        self.healthy: set[str] = set()
        self.starts: list[tuple[str, dict[str, Any]]] = []
        self.stops: list[str] = []
        self.swaps: list[tuple[tuple[str, ...], str]] = []
        self.hold: dict[str, asyncio.Future] = {}
        self.failures: dict[str, str] = {}
        self.on_event: Callable[[dict[str, Any]], None] | None = None
        self.ports = iter(range(40000, 41000))
        self.runtime_limits: Limits | None = None  # None: the scheduler keeps its own
        self.limit_reads = 0

    async def load_catalog(self) -> Catalog:
        return self.catalog

    async def start(self, entry, attempt, parameters, ttl, memory, stop_first=()) -> Started:
        self.stops.extend(victim.name for victim in stop_first)  # a swap: the node agent stops them first
        self.swaps.append((tuple(v.name for v in stop_first), entry.name))
        self.starts.append((entry.name, dict(parameters)))
        if entry.name in self.hold:
            await self.hold[entry.name]
        if entry.name in self.failures:
            raise StartFailed(self.failures[entry.name], "last log lines")
        return Started(base_url=f"http://127.0.0.1:{next(self.ports)}", host="127.0.0.1")

    async def stop(self, entry) -> None:
        self.stops.append(entry.name)

    async def recorded(self) -> list[Recorded]:
        return self.recorded_runners

    async def probe(self, base_url: str) -> bool:
        return base_url in self.healthy

    async def listen(self, on_event) -> None:
        self.on_event = on_event

    async def persist_usage(self, used) -> None:
        pass

    async def limits(self) -> Limits | None:
        self.limit_reads += 1
        return self.runtime_limits

    @property
    def started(self) -> list[str]:
        return [name for name, _ in self.starts]


def entry(name: str, **kwargs: Any) -> CatalogEntry:
    ids = {"a": 1, "b": 2, "c": 3}
    return CatalogEntry(id=ids.get(name, 9), name=name, **kwargs)


async def settle() -> None:
    """Let every ready task run (yields to the loop; no time passes)."""
    for _ in range(30):
        await asyncio.sleep(0)


@pytest.fixture
def timers() -> list[FakeTimer]:
    return []


def make(
    entries: list[CatalogEntry], timers: list[FakeTimer], **kwargs: Any
) -> tuple[Scheduler, FakeEffects]:
    effects = FakeEffects(entries, kwargs.pop("recorded", None))

    def call_later(delay: float, callback: Callable[[], None]) -> FakeTimer:
        timer = FakeTimer(delay, callback)
        timers.append(timer)
        return timer

    scheduler = Scheduler(effects, call_later=call_later, **kwargs)
    return scheduler, effects


def live(timers: list[FakeTimer]) -> list[FakeTimer]:
    return [t for t in timers if not t.cancelled]


async def test_twenty_concurrent_requests_for_a_cold_model_start_it_once(timers) -> None:
    scheduler, effects = make([entry("a")], timers)
    leases = await asyncio.gather(*(scheduler.acquire("a") for _ in range(20)))
    assert effects.started == ["a"]
    assert len({lease.base_url for lease in leases}) == 1
    assert scheduler.status_of("a")["in_flight"] == 20
    for lease in leases:
        lease.release()
    assert scheduler.status_of("a")["in_flight"] == 0


async def test_a_ready_model_is_served_without_any_effect(timers) -> None:
    scheduler, effects = make([entry("a")], timers)
    (await scheduler.acquire("a")).release()
    lease = await scheduler.acquire("a")
    assert effects.started == ["a"] and effects.stops == []
    assert lease.load_seconds == 0.0
    lease.release()
    lease.release()  # idempotent
    assert scheduler.status_of("a")["in_flight"] == 0


async def test_names_resolve_by_alias_and_latest_tag_and_unknown_or_disabled_are_refused(timers) -> None:
    scheduler, _ = make([entry("a", aliases=("alpha",)), entry("b", enabled=False)], timers)
    assert (await scheduler.acquire("alpha")).model == "a"
    assert (await scheduler.acquire("a:latest")).model == "a"
    with pytest.raises(ModelNotFound, match="'nope'"):
        await scheduler.acquire("nope")
    with pytest.raises(ModelDisabled):
        await scheduler.acquire("b")


async def test_a_model_whose_file_is_missing_or_unreadable_is_a_503_saying_so_not_disabled(timers) -> None:
    scheduler, effects = make(
        [entry("gone", state="missing"), entry("bad", state="error", error="not a GGUF file")], timers
    )
    with pytest.raises(ModelFileUnavailable, match="'gone' is not available: its file is missing") as missing:
        await scheduler.load("gone")
    assert missing.value.status == 503 and missing.value.code == "model_unavailable"
    with pytest.raises(ModelFileUnavailable, match="its file could not be read: not a GGUF file"):
        await scheduler.acquire("bad")
    assert effects.started == []
    assert await scheduler.unload("gone") is False  # unloading stays possible


async def test_preload_skips_a_model_whose_file_is_missing(timers) -> None:
    scheduler, effects = make([entry("a", preload=True, state="missing"), entry("b", preload=True)], timers)
    await scheduler.ensure_started()
    await settle()
    assert effects.started == ["b"]


async def test_with_one_slot_b_waits_for_as_request_to_finish_then_only_b_runs(timers) -> None:
    scheduler, effects = make([entry("a"), entry("b")], timers, max_loaded=1)
    lease_a = await scheduler.acquire("a")
    waiting_b = asyncio.ensure_future(scheduler.acquire("b"))
    await settle()
    assert not waiting_b.done()
    assert effects.stops == []  # A is still answering: not killed
    assert scheduler.status_of("a")["state"] == "draining"
    assert "finish 1 request" in scheduler.status_of("b")["waiting_for"]
    lease_a.release()
    await settle()
    lease_b = await waiting_b
    assert effects.stops == ["a"] and effects.started == ["a", "b"]
    assert {s["model"]: s["state"] for s in scheduler.status()} == {"a": "stopped", "b": "ready"}
    assert lease_b.load_seconds >= 0


async def test_queued_requests_are_served_fifo_and_collated_per_model(timers) -> None:
    scheduler, effects = make([entry("a"), entry("b"), entry("c")], timers, max_loaded=1)
    lease_a = await scheduler.acquire("a")
    first_b = asyncio.ensure_future(scheduler.acquire("b"))
    await settle()
    then_c = asyncio.ensure_future(scheduler.acquire("c"))
    await settle()
    second_b = asyncio.ensure_future(scheduler.acquire("b"))
    await settle()
    lease_a.release()
    await settle()
    # Both B requests are served by one start, before C.
    assert first_b.done() and second_b.done() and not then_c.done()
    assert effects.started == ["a", "b"]
    first_b.result().release()
    second_b.result().release()
    await settle()
    (await then_c).release()
    assert effects.started == ["a", "b", "c"] and effects.stops == ["a", "b"]


async def test_an_idle_runner_is_unloaded_when_its_ttl_fires(timers) -> None:
    scheduler, effects = make([entry("a", ttl_seconds=30)], timers)
    lease = await scheduler.acquire("a")
    assert live(timers) == []  # no timer while a request runs
    lease.release()
    [timer] = live(timers)
    assert timer.delay == 30
    assert scheduler.status_of("a")["expires_at"] is not None
    timer.callback()
    await settle()
    assert effects.stops == ["a"] and scheduler.status_of("a")["state"] == "stopped"


async def test_a_new_request_cancels_the_idle_timer(timers) -> None:
    scheduler, effects = make([entry("a")], timers, default_ttl=10)
    (await scheduler.acquire("a")).release()
    [timer] = live(timers)
    lease = await scheduler.acquire("a")
    assert timer.cancelled
    timer.callback()  # a timer that fires late anyway changes nothing
    await settle()
    assert effects.stops == []
    lease.release()


async def test_a_request_ttl_of_zero_unloads_right_after_and_negative_keeps_it_forever(timers) -> None:
    scheduler, _ = make([entry("a"), entry("b")], timers, default_ttl=60, max_loaded=2)
    (await scheduler.acquire("a", ttl=0)).release()
    [timer] = live(timers)
    assert timer.delay == 0
    (await scheduler.acquire("b", ttl=-1)).release()
    assert len(live(timers)) == 1
    assert scheduler.status_of("b")["expires_at"] is None


async def test_a_pinned_model_is_never_evicted_nor_idle_unloaded(timers) -> None:
    scheduler, effects = make([entry("a", pinned=True), entry("b")], timers, max_loaded=1, default_ttl=5)
    (await scheduler.acquire("a")).release()
    assert live(timers) == []
    with pytest.raises(ModelUnavailable, match="pinned"):
        await scheduler.acquire("b")
    assert effects.stops == [] and scheduler.status_of("a")["state"] == "ready"


async def test_the_memory_budget_evicts_before_a_start(timers) -> None:
    gib = 1024**3
    entries = [
        entry("a", memory_estimate=5 * gib),
        entry("b", memory_estimate=2 * gib),
        entry("c", memory_estimate=4 * gib),
    ]
    scheduler, effects = make(entries, timers, max_loaded=0, memory_budget=8 * gib)
    (await scheduler.acquire("a")).release()
    (await scheduler.acquire("b")).release()
    assert effects.stops == []
    (await scheduler.acquire("c")).release()
    assert effects.stops == ["a"]  # least recently used, and enough to fit


async def test_a_failed_start_gives_every_waiter_the_reason_and_the_next_request_tries_again(timers) -> None:
    scheduler, effects = make([entry("a")], timers)
    effects.failures["a"] = "llama-server exited with status 1: gguf_init_from_reader: invalid magic"
    results = await asyncio.gather(*(scheduler.acquire("a") for _ in range(3)), return_exceptions=True)
    assert all(isinstance(r, ModelUnavailable) and "invalid magic" in r.message for r in results)
    assert effects.started == ["a"]
    assert scheduler.status_of("a")["state"] == "failed"
    del effects.failures["a"]
    (await scheduler.acquire("a")).release()
    assert effects.started == ["a", "a"]


async def test_waiting_past_the_timeout_is_a_queue_timeout_naming_the_model_and_why(timers) -> None:
    scheduler, effects = make([entry("a")], timers)
    effects.hold["a"] = asyncio.get_running_loop().create_future()
    with pytest.raises(QueueTimeout, match="model 'a' was not ready within 0 s: it is still"):
        await scheduler.acquire("a", timeout=0)
    effects.hold["a"].set_result(None)
    await settle()
    assert scheduler.status_of("a")["in_flight"] == 0  # the timed-out request holds nothing


async def test_a_client_that_goes_away_while_waiting_leaves_no_lease_behind(timers) -> None:
    scheduler, effects = make([entry("a")], timers)
    effects.hold["a"] = asyncio.get_running_loop().create_future()
    waiting = asyncio.ensure_future(scheduler.acquire("a"))
    await settle()
    waiting.cancel()
    await settle()
    effects.hold["a"].set_result(None)
    await settle()
    assert scheduler.status_of("a")["in_flight"] == 0
    assert scheduler.status_of("a")["queued"] == 0


async def test_different_runner_parameters_restart_the_runner_after_it_drains(timers) -> None:
    scheduler, effects = make([entry("a", parameters={"ctx_size": 4096})], timers)
    first = await scheduler.acquire("a")
    same = await scheduler.acquire("a", runner_params={"ctx_size": 4096})
    assert effects.started == ["a"]
    bigger = asyncio.ensure_future(scheduler.acquire("a", runner_params={"ctx_size": 8192}))
    await settle()
    assert not bigger.done() and effects.stops == []
    first.release()
    same.release()
    await settle()
    lease = await bigger
    assert effects.stops == ["a"]
    assert effects.starts[-1] == ("a", {"ctx_size": 8192})
    assert scheduler.status_of("a")["context_length"] == 8192
    lease.release()


async def test_a_runner_reported_dead_is_started_again_by_the_next_request(timers) -> None:
    scheduler, effects = make([entry("a")], timers)
    (await scheduler.acquire("a")).release()
    attempt = scheduler.actors["a"].attempt
    scheduler.on_event(
        {
            "type": "runner.state",
            "model": "a",
            "state": "failed",
            "attempt": attempt,
            "failure_reason": "llama-server exited unexpectedly (killed by signal 9)",
        }
    )
    status = scheduler.status_of("a")
    assert status["state"] == "failed" and "signal 9" in status["failure_reason"]
    (await scheduler.acquire("a")).release()
    assert effects.started == ["a", "a"]


async def test_an_event_about_an_older_attempt_is_ignored(timers) -> None:
    scheduler, _ = make([entry("a")], timers)
    (await scheduler.acquire("a")).release()
    scheduler.on_event({"type": "runner.state", "model": "a", "state": "stopped", "attempt": "old"})
    assert scheduler.status_of("a")["state"] == "ready"


async def test_gpu_memory_reported_by_the_agent_shows_until_the_runner_stops(timers) -> None:
    scheduler, _ = make([entry("a")], timers)
    (await scheduler.acquire("a")).release()
    attempt = scheduler.actors["a"].attempt
    assert scheduler.status_of("a")["size_vram"] == 0
    scheduler.on_event({"type": "runner.memory", "model": "a", "attempt": "old", "vram_bytes": 7})
    assert scheduler.status_of("a")["size_vram"] == 0, "another start's reading"
    scheduler.on_event({"type": "runner.memory", "model": "a", "attempt": attempt, "vram_bytes": 3 << 30})
    assert scheduler.status_of("a")["size_vram"] == 3 << 30
    assert await scheduler.unload("a")
    assert scheduler.status_of("a")["size_vram"] == 0


async def test_progress_events_show_in_the_status_while_starting(timers) -> None:
    scheduler, effects = make([entry("a")], timers)
    effects.hold["a"] = asyncio.get_running_loop().create_future()
    waiting = asyncio.ensure_future(scheduler.acquire("a"))
    await settle()
    attempt = scheduler.actors["a"].attempt
    scheduler.on_event(
        {
            "type": "runner.progress",
            "model": "a",
            "attempt": attempt,
            "stage": "loading model",
            "percent": 10,
            "message": "load_model: loading model",
        }
    )
    assert scheduler.status_of("a")["progress"]["stage"] == "loading model"
    effects.hold["a"].set_result(None)
    (await waiting).release()
    assert scheduler.status_of("a")["progress"] is None


async def test_a_spawned_process_is_no_longer_queued_for_the_agent(timers) -> None:
    scheduler, effects = make([entry("a")], timers)
    effects.hold["a"] = asyncio.get_running_loop().create_future()
    waiting = asyncio.ensure_future(scheduler.acquire("a"))
    await settle()
    assert scheduler.status_of("a")["progress"]["stage"] == "queued"
    attempt = scheduler.actors["a"].attempt
    spawned = {"type": "runner.state", "model": "a", "state": "starting", "pid": 4321}
    scheduler.on_event({**spawned, "attempt": "another"})
    assert scheduler.status_of("a")["progress"]["stage"] == "queued"
    scheduler.on_event({**spawned, "attempt": attempt})
    assert scheduler.status_of("a")["progress"] == {
        "stage": "process started",
        "percent": 1,
        "message": "pid 4321",
    }
    with pytest.raises(QueueTimeout, match="it is still loading \\(process started\\)"):
        await scheduler.acquire("a", timeout=0)
    effects.hold["a"].set_result(None)
    (await waiting).release()


async def test_unload_waits_for_in_flight_requests_and_unload_all_counts(timers) -> None:
    scheduler, effects = make([entry("a"), entry("b")], timers, max_loaded=2)
    lease = await scheduler.acquire("a")
    (await scheduler.acquire("b")).release()
    unloading = asyncio.ensure_future(scheduler.unload("a"))
    await settle()
    assert not unloading.done() and effects.stops == []
    lease.release()
    assert await unloading is True
    assert await scheduler.unload("a") is False
    assert await scheduler.unload_all() == 1
    assert sorted(effects.stops) == ["a", "b"]


async def test_restart_stops_and_starts_again(timers) -> None:
    scheduler, effects = make([entry("a")], timers)
    (await scheduler.acquire("a")).release()
    status = await scheduler.restart("a")
    assert status["state"] == "ready" and effects.started == ["a", "a"] and effects.stops == ["a"]


async def test_start_up_adopts_answering_runners_stops_the_rest_and_preloads(timers) -> None:
    recorded = [
        Recorded(name="a", state="ready", attempt="x1", base_url="http://127.0.0.1:4001", port=4001),
        Recorded(name="b", state="ready", attempt="x2", base_url="http://127.0.0.1:4002", port=4002),
    ]
    entries = [entry("a"), entry("b"), entry("c", preload=True)]
    scheduler, effects = make(entries, timers, recorded=recorded, max_loaded=3)
    effects.healthy.add("http://127.0.0.1:4001")
    await scheduler.ensure_started()
    await settle()
    assert effects.stops == ["b"]
    assert effects.started == ["c"]
    lease = await scheduler.acquire("a")
    assert lease.base_url == "http://127.0.0.1:4001" and effects.started == ["c"]
    lease.release()


async def test_a_catalog_change_event_reloads_the_catalog(timers) -> None:
    scheduler, effects = make([entry("a")], timers)
    await scheduler.ensure_started()
    effects.catalog = Catalog(entries={"a": entry("a"), "b": entry("b")})
    scheduler.on_event({"type": "catalog.changed"})
    await settle()
    assert "b" in scheduler.catalog.entries


async def test_a_catalog_write_in_this_process_is_read_by_the_next_request_before_its_event_arrives(
    timers,
) -> None:
    # `ollama create` then a request for the new model at once: the catalog.changed event comes
    # back over the channel layer later, and an unknown name was just looked up (no miss re-read).
    scheduler, effects = make([entry("a")], timers)
    await scheduler.ensure_started()
    with pytest.raises(ModelNotFound):
        await scheduler.acquire("b")
    effects.catalog = Catalog(entries={"a": entry("a"), "b": entry("b")})
    scheduler.catalog_freshness.changed()  # what a catalog.changed published in this process does
    lease = await scheduler.acquire("b")
    assert lease.model == "b"
    lease.release()


async def test_a_catalog_read_that_began_before_a_write_never_replaces_one_that_began_after(
    timers,
) -> None:
    scheduler, effects = make([entry("a")], timers)
    await scheduler.ensure_started()
    gate = asyncio.Event()
    before = Catalog(entries={"a": entry("a")})

    async def slow_read() -> Catalog:
        await gate.wait()
        return before

    effects.load_catalog = slow_read  # type: ignore[method-assign]
    old_read = asyncio.ensure_future(scheduler.refresh_catalog())
    await settle()
    effects.catalog = Catalog(entries={"a": entry("a"), "b": entry("b")})
    effects.load_catalog = FakeEffects.load_catalog.__get__(effects)  # type: ignore[method-assign]
    scheduler.catalog_freshness.changed()
    await scheduler.refresh_catalog()
    gate.set()
    await old_read
    assert "b" in scheduler.catalog.entries


def limits(**changes: Any) -> Limits:
    values = {
        "max_loaded_models": 1,
        "memory_budget": None,
        "default_ttl": 0,
        "default_model": None,
        "request_timeout": 300.0,
    }
    return Limits(**{**values, **changes})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_start_up_puts_the_runtime_limits_in_force_over_the_constructors(timers) -> None:
    scheduler, effects = make([entry("a"), entry("b")], timers, max_loaded=1, request_timeout=300)
    effects.runtime_limits = limits(max_loaded_models=2, request_timeout=7.5, default_ttl=40)
    await scheduler.ensure_started()
    (await scheduler.acquire("a")).release()
    (await scheduler.acquire("b")).release()
    assert effects.stops == []  # two fit now
    assert scheduler.request_timeout == 7.5
    assert [t.delay for t in live(timers)] == [40, 40]


async def test_a_settings_change_with_more_slots_starts_a_waiting_model_at_once(timers) -> None:
    scheduler, effects = make([entry("a"), entry("b")], timers, max_loaded=1)
    effects.runtime_limits = limits(max_loaded_models=1)
    effects.hold["a"] = asyncio.get_running_loop().create_future()
    waiting_a = asyncio.ensure_future(scheduler.acquire("a"))
    waiting_b = asyncio.ensure_future(scheduler.acquire("b"))
    await settle()
    assert effects.started == ["a"] and "finish starting" in scheduler.status_of("b")["waiting_for"]
    effects.runtime_limits = limits(max_loaded_models=2)
    scheduler.on_event({"type": "settings.changed", "settings": effects.runtime_limits.as_dict()})
    await settle()
    assert waiting_b.done() and effects.started == ["a", "b"]  # b did not wait for a any longer
    effects.hold["a"].set_result(None)
    await settle()
    assert effects.stops == []
    waiting_a.result().release()
    waiting_b.result().release()


async def test_a_settings_change_with_fewer_slots_evicts_at_the_next_start(timers) -> None:
    scheduler, effects = make([entry("a"), entry("b"), entry("c")], timers, max_loaded=3)
    effects.runtime_limits = limits(max_loaded_models=3)
    for name in ("a", "b"):
        (await scheduler.acquire(name)).release()
    effects.runtime_limits = limits(max_loaded_models=1)
    scheduler.on_event({"type": "settings.changed"})
    await settle()
    assert effects.stops == []  # nothing is cut off by the change itself
    (await scheduler.acquire("c")).release()
    assert sorted(effects.stops) == ["a", "b"] and effects.started == ["a", "b", "c"]


async def test_a_shorter_default_ttl_counts_the_time_a_runner_already_sat_idle(timers) -> None:
    clock = Clock()
    effects = FakeEffects([entry("a")])
    effects.runtime_limits = limits(default_ttl=0)

    def call_later(delay: float, callback: Callable[[], None]) -> FakeTimer:
        timers.append(FakeTimer(delay, callback))
        return timers[-1]

    scheduler = Scheduler(effects, call_later=call_later, clock=clock)
    (await scheduler.acquire("a")).release()
    assert live(timers) == []  # 0 = never
    clock.now += 25
    effects.runtime_limits = limits(default_ttl=60)
    scheduler.on_event({"type": "settings.changed"})
    await settle()
    [timer] = live(timers)
    assert timer.delay == 35
    effects.runtime_limits = limits(default_ttl=10)
    scheduler.on_event({"type": "settings.changed"})
    await settle()
    [timer] = live(timers)
    assert timer.delay == 0  # already idle longer than that: unloaded now
    timer.callback()
    await settle()
    assert effects.stops == ["a"]


async def test_a_settings_change_that_changes_nothing_leaves_timers_alone(timers) -> None:
    scheduler, effects = make([entry("a")], timers, default_ttl=30)
    effects.runtime_limits = limits(default_ttl=30)
    (await scheduler.acquire("a")).release()
    [timer] = live(timers)
    reads = effects.limit_reads
    scheduler.on_event({"type": "settings.changed"})
    await settle()
    assert effects.limit_reads == reads + 1 and live(timers) == [timer]


async def test_evicting_an_idle_runner_is_one_swap_the_node_agent_does_stop_then_start(timers) -> None:
    scheduler, effects = make([entry("a"), entry("b")], timers, max_loaded=1)
    (await scheduler.acquire("a")).release()

    lease_b = await scheduler.acquire("b")

    assert effects.swaps == [((), "a"), (("a",), "b")]  # no separate stop round trip
    assert {s["model"]: s["state"] for s in scheduler.status()} == {"a": "stopped", "b": "ready"}
    lease_b.release()


async def test_a_busy_victim_still_drains_first_and_is_stopped_on_its_own(timers) -> None:
    scheduler, effects = make([entry("a"), entry("b")], timers, max_loaded=1)
    lease_a = await scheduler.acquire("a")
    waiting_b = asyncio.ensure_future(scheduler.acquire("b"))
    await settle()
    lease_a.release()
    (await waiting_b).release()
    assert effects.swaps == [((), "a"), ((), "b")] and effects.stops == ["a"]


async def test_a_swap_victim_shows_stopped_as_soon_as_its_stop_event_arrives(timers) -> None:
    scheduler, effects = make([entry("a"), entry("b")], timers, max_loaded=1)
    (await scheduler.acquire("a")).release()
    attempt_a = scheduler.actors["a"].attempt
    effects.hold["b"] = asyncio.get_running_loop().create_future()
    waiting_b = asyncio.ensure_future(scheduler.acquire("b"))
    await settle()
    assert scheduler.status_of("a")["state"] == "stopping"
    scheduler.on_event({"type": "runner.state", "model": "a", "state": "stopped", "attempt": attempt_a})
    assert scheduler.status_of("a")["state"] == "stopped"
    assert scheduler.status_of("b")["state"] == "starting"
    effects.hold["b"].set_result(None)
    (await waiting_b).release()
    assert scheduler.status_of("a")["state"] == "stopped" and scheduler.status_of("b")["state"] == "ready"


async def test_a_swap_whose_start_fails_leaves_the_victim_stopped_and_fails_the_waiters(timers) -> None:
    scheduler, effects = make([entry("a"), entry("b")], timers, max_loaded=1)
    (await scheduler.acquire("a")).release()
    effects.failures["b"] = "error loading model"
    with pytest.raises(ModelUnavailable, match="error loading model"):
        await scheduler.acquire("b")
    assert scheduler.status_of("a")["state"] == "stopped" and scheduler.status_of("b")["state"] == "failed"
    lease = await scheduler.acquire("a")  # and a comes back on request
    assert lease.base_url and effects.started == ["a", "b", "a"]
    lease.release()
