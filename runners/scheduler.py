"""The scheduler: the one place that decides which runner starts, waits, or is evicted.

It lives in the gateway (daphne) as one asyncio state machine per model (an `Actor`, like
llama-swap's process actor) plus one FIFO queue of models waiting to start. Requests and events
feed it; its effects (Celery tasks, the database, the channel layer) sit behind `Effects`, so the
logic is tested with fake effects. The hot path — `acquire` for a model that is ready — only
touches memory.

Life of a request: ready → a lease at once. Otherwise the request waits on its model's actor;
the model joins the start queue once (coalescing: one start for N requests, all served together
when it is ready). The head of the queue asks `eviction.plan_start`: start now, evict (victims
drain their in-flight requests, then stop), wait, or impossible. A lease's release may unblock
an eviction or arm the idle TTL timer.

The limits (max loaded models, memory budget, default TTL, request timeout) are the runtime
settings in force (`llamaproxy.runtime`), read through `Effects.limits` at start-up, again when a
`settings.changed` event arrives (then waiting requests are admitted again under the new limits),
and every 30 s as a safety net.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from llamaproxy.events import listen_locally
from llamaproxy.freshness import Freshness
from llamaproxy.runtime import Limits as RuntimeLimits
from runners import eviction
from runners.errors import (
    ModelDisabled,
    ModelFileUnavailable,
    ModelNotFound,
    ModelUnavailable,
    QueueFull,
    QueueTimeout,
    SchedulerError,
)
from runners.snapshot import Catalog, CatalogEntry

log = logging.getLogger(__name__)

STOPPED, STARTING, READY, DRAINING, STOPPING, FAILED = (
    "stopped",
    "starting",
    "ready",
    "draining",
    "stopping",
    "failed",
)
MAX_QUEUED = 1024  # requests waiting for runners, all models together (LLAMAPROXY_MAX_QUEUE)
USAGE_FLUSH_S = 5.0  # last_used_at reaches the database in batches, off the request path
CATALOG_MISS_REFRESH_S = 2.0  # an unknown name re-reads the catalog at most this often
CATALOG_REFRESH_ROUNDS = 6  # and it is re-read every 6 usage flushes (30 s) anyway


class StartFailed(Exception):
    def __init__(self, reason: str, log_excerpt: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.log_excerpt = log_excerpt


@dataclass(frozen=True)
class Started:
    base_url: str
    host: str = ""
    port: int | None = None
    pid: int | None = None


@dataclass(frozen=True)
class Recorded:
    """A runner the database records as running, for reconciliation after a gateway restart."""

    name: str
    state: str
    attempt: str = ""
    base_url: str | None = None
    host: str = ""
    port: int | None = None
    pid: int | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    started_at: float | None = None
    ready_at: float | None = None
    vram_bytes: int = 0


class Effects(Protocol):
    async def load_catalog(self) -> Catalog: ...
    async def start(
        self,
        entry: CatalogEntry,
        attempt: str,
        parameters: dict[str, Any],
        ttl: int | None,
        memory: int,
        stop_first: tuple[CatalogEntry, ...] = (),
    ) -> Started:
        """Start a runner; `stop_first`: idle runners the node agent stops before it (a swap in one trip)."""
        ...

    async def stop(self, entry: CatalogEntry) -> None: ...
    async def recorded(self) -> list[Recorded]: ...
    async def probe(self, base_url: str) -> bool: ...
    async def listen(self, on_event: Callable[[dict[str, Any]], None]) -> None: ...
    async def persist_usage(self, used: dict[int, float]) -> None: ...
    async def limits(self) -> RuntimeLimits | None:
        """The runtime limits in force (None: keep the ones the scheduler has)."""
        ...


@dataclass
class Waiter:
    future: asyncio.Future
    params: dict[str, Any]
    enqueued: float


@dataclass
class Actor:
    """Everything the gateway knows about one model's runner; only the scheduler changes it."""

    name: str
    state: str = STOPPED
    base_url: str | None = None
    host: str = ""
    port: int | None = None
    pid: int | None = None
    attempt: str = ""
    params: dict[str, Any] = field(default_factory=dict)  # request-level parameters it runs with
    next_params: dict[str, Any] = field(default_factory=dict)
    in_flight: int = 0
    waiters: deque[Waiter] = field(default_factory=deque)
    last_used: float = 0.0  # monotonic, for LRU and TTL
    last_used_wall: float | None = None
    ttl_override: int | None = None
    ttl_timer: asyncio.TimerHandle | None = None
    memory: int = 0
    vram: int = 0  # GPU memory the runner holds (nvidia-smi, via the node agent)
    progress: dict[str, Any] | None = None
    failure_reason: str = ""
    log_excerpt: str = ""
    blocked: str = ""  # why its start is not happening yet (for status and timeouts)
    started_at: float | None = None
    ready_at: float | None = None
    stopped: asyncio.Event = field(default_factory=asyncio.Event)
    ready_or_failed: asyncio.Event = field(default_factory=asyncio.Event)


class Lease:
    """A request's hold on a ready runner; `release` when the response ends (idempotent, cheap)."""

    __slots__ = ("_actor", "_released", "_scheduler", "base_url", "load_seconds", "model")

    def __init__(self, scheduler: Scheduler, actor: Actor, load_seconds: float) -> None:
        self._scheduler = scheduler
        self._actor = actor
        self._released = False
        self.model = actor.name
        self.base_url = actor.base_url or ""
        self.load_seconds = load_seconds

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        self._scheduler._release_threadsafe(self._actor)

    def __repr__(self) -> str:
        return f"<Lease {self.model} {self.base_url}{' released' if self._released else ''}>"


class Scheduler:
    def __init__(
        self,
        effects: Effects,
        *,
        max_loaded: int = 1,
        memory_budget: int | None = None,
        default_ttl: int = 0,
        request_timeout: float = 300.0,
        max_queued: int = MAX_QUEUED,
        preload: list[str] | None = None,
        call_later: Callable[[float, Callable[[], None]], Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.effects = effects
        self.limits = eviction.Limits(max_loaded=max_loaded, memory_budget=memory_budget)
        self.default_ttl = default_ttl
        self.request_timeout = request_timeout
        self.max_queued = max_queued
        self.preload = list(preload or [])
        self.catalog = Catalog()
        self.actors: dict[str, Actor] = {}
        self.pending: deque[str] = deque()
        self._call_later = call_later
        self._clock = clock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread_id: int | None = None
        self._init: asyncio.Task | None = None
        self._initialized = False
        self._tasks: set[asyncio.Task] = set()
        self._admitting = False
        self._admit_again = False
        self._swapping: set[str] = set()  # victims the node agent stops as part of a start
        self._usage_dirty: dict[int, float] = {}
        # Read again on catalog.changed, and on the next request after this process changed the
        # catalog (its event comes back over the channel layer only a moment later).
        self.catalog_freshness = Freshness()

    def apply_limits(self, limits: RuntimeLimits) -> bool:
        """Put runtime limits in force; True when something the scheduler uses changed."""
        before = (self.limits, self.default_ttl, self.request_timeout)
        self.limits = eviction.Limits(max_loaded=limits.max_loaded_models, memory_budget=limits.memory_budget)
        self.default_ttl = limits.default_ttl
        self.request_timeout = limits.request_timeout
        return before != (self.limits, self.default_ttl, self.request_timeout)

    async def reload_limits(self) -> bool:
        """Read the limits in force again; when they changed, idle timers are re-armed under the
        new default TTL and waiting requests are admitted again. True when they changed."""
        limits = await self.effects.limits()
        if limits is None:
            return False
        old_ttl = self.default_ttl
        if not self.apply_limits(limits):
            return False
        log.info(
            "limits now in force: max %s loaded, memory budget %s, default TTL %s s, timeout %s s",
            self.limits.max_loaded,
            self.limits.memory_budget,
            self.default_ttl,
            self.request_timeout,
        )
        if self.default_ttl != old_ttl:
            for actor in self.actors.values():
                if actor.state == READY and actor.in_flight == 0:
                    self._arm_ttl(actor, count_idle_time=True)
        self._admit()
        return True

    # --- start-up -------------------------------------------------------------------------

    async def ensure_started(self) -> None:
        if self._initialized:
            return
        if self._init is None:
            self._loop = asyncio.get_running_loop()
            self._thread_id = threading.get_ident()
            self._init = asyncio.ensure_future(self._start_up())
        await asyncio.shield(self._init)

    async def _start_up(self) -> None:
        try:
            limits = await self.effects.limits()
            if limits is not None:
                self.apply_limits(limits)
            begun = self.catalog_freshness.begin()
            self.catalog = await self.effects.load_catalog()
            self.catalog_freshness.accept(begun)
        except Exception:
            self._init = None  # the next request tries again
            raise
        self._spawn(self.effects.listen(self.on_event))
        await self._reconcile()
        self._initialized = True
        self._spawn(self._housekeeping_forever())
        for name in self._preload_names():
            self._spawn(self._preload(name))

    async def _reconcile(self) -> None:
        """Adopt runners recorded ready whose /health answers; have the node agent stop the rest."""
        for record in await self.effects.recorded():
            entry = self.catalog.entries.get(record.name)
            if entry is None:
                continue
            actor = self._actor(entry.name)
            if record.state == READY and record.base_url and await self.effects.probe(record.base_url):
                actor.state = READY
                actor.base_url, actor.host, actor.port, actor.pid = (
                    record.base_url,
                    record.host,
                    record.port,
                    record.pid,
                )
                actor.attempt = record.attempt
                actor.params = dict(record.parameters)
                actor.memory = entry.memory_for(actor.params)
                actor.vram = record.vram_bytes
                actor.started_at, actor.ready_at = record.started_at, record.ready_at
                actor.last_used = self._clock()
                actor.last_used_wall = time.time()
                self._arm_ttl(actor)
                log.info("adopted the running runner of %s at %s", entry.name, record.base_url)
            else:
                actor.state = STOPPING
                self._spawn(self._stop(actor, entry))

    def _preload_names(self) -> list[str]:
        names = [e.name for e in self.catalog.entries.values() if e.preload and e.usable]
        for requested in self.preload:
            entry = self.catalog.resolve(requested)
            if entry is None:
                log.warning("LLAMAPROXY_PRELOAD names '%s', which is not in the catalog", requested)
            elif entry.name not in names:
                names.append(entry.name)
        return names

    async def _preload(self, name: str) -> None:
        try:
            await self.load(name)
        except SchedulerError as exc:
            log.warning("preload of %s failed: %s", name, exc.message)

    # --- the faces' API -------------------------------------------------------------------

    async def acquire(
        self,
        model: str,
        *,
        ttl: int | None = None,
        runner_params: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Lease:
        if not self._initialized:
            await self.ensure_started()
        entry = await self._resolve(model)
        actor = self._actor(entry.name)
        actor.ttl_override = ttl
        params = dict(runner_params or {})
        if actor.state == READY and self._params_match(actor, params):
            return self._lease(actor, 0.0)
        return await self._wait_for(actor, entry, params, timeout)

    async def load(self, model: str, ttl: int | None = None) -> dict[str, Any]:
        lease = await self.acquire(model, ttl=ttl)
        lease.release()  # the runner stays up; the release arms its idle timer
        return self.status_of(lease.model)

    async def unload(self, model: str) -> bool:
        """Stop a model's runner after its in-flight requests finish; False when it was not running."""
        if not self._initialized:
            await self.ensure_started()
        entry = await self._resolve(model, allow_disabled=True)
        actor = self._actor(entry.name)
        if actor.state == STARTING:
            await actor.ready_or_failed.wait()
        if actor.state in (STOPPED, FAILED):
            return False
        stopped = actor.stopped
        if actor.state == READY:
            self._drain(actor, "unloaded on request")
        await stopped.wait()
        return True

    async def unload_all(self) -> int:
        if not self._initialized:
            await self.ensure_started()
        running = [a.name for a in self.actors.values() if a.state in (STARTING, READY, DRAINING, STOPPING)]
        results = await asyncio.gather(*(self.unload(name) for name in running))
        return sum(results)

    async def restart(self, model: str) -> dict[str, Any]:
        entry = await self._resolve(model)
        await self.unload(entry.name)
        return await self.load(entry.name)

    def status(self) -> list[dict[str, Any]]:
        if not self._initialized and self._init is None:
            with contextlib.suppress(RuntimeError):  # no running loop: nothing to start from
                asyncio.get_running_loop().create_task(self.ensure_started())
        return [self.status_of(name) for name in sorted(self.actors)]

    def status_of(self, name: str) -> dict[str, Any]:
        actor = self._actor(name)
        entry = self.catalog.entries.get(name)
        ttl = self._ttl_for(actor, entry)
        expires_at = None
        if actor.state == READY and actor.in_flight == 0 and ttl is not None and actor.last_used_wall:
            expires_at = _iso(actor.last_used_wall + ttl)
        return {
            "model": name,
            "state": actor.state,
            "host": actor.host,
            "port": actor.port,
            "pid": actor.pid,
            "base_url": actor.base_url if actor.state in (READY, DRAINING) else None,
            "started_at": _iso(actor.started_at),
            "ready_at": _iso(actor.ready_at),
            "last_used_at": _iso(actor.last_used_wall),
            "expires_at": expires_at,
            "ttl_seconds": ttl,
            "memory_estimate": actor.memory or (entry.memory_for(actor.params) if entry else None),
            "size_vram": actor.vram if actor.state in (READY, DRAINING) else 0,
            "in_flight": actor.in_flight,
            "queued": len(actor.waiters),
            "progress": actor.progress if actor.state == STARTING else None,
            "failure_reason": actor.failure_reason,
            "waiting_for": actor.blocked if actor.waiters else "",
            "context_length": entry.effective_context(actor.params) if entry else None,
            "parameters": dict(actor.params),
            "pinned": bool(entry and entry.pinned),
        }

    # --- events from the node agents and the catalog --------------------------------------

    def on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "catalog.changed":
            self._spawn(self.refresh_catalog())
            return
        if kind == "settings.changed":
            from llamaproxy.runtime import on_settings_changed

            on_settings_changed(event)  # the cached limits are stale: read them again
            self._spawn(self.reload_limits())
            return
        actor = self.actors.get(event.get("model", ""))
        if actor is None:
            return
        if kind == "runner.memory":
            if event.get("attempt") == actor.attempt and isinstance(event.get("vram_bytes"), int):
                actor.vram = max(0, event["vram_bytes"])
            return
        if kind == "runner.progress":
            if actor.state == STARTING and event.get("attempt") == actor.attempt:
                actor.progress = {k: event.get(k) for k in ("stage", "percent", "message")}
            return
        if kind != "runner.state":
            return
        if event.get("state") == STARTING:
            # The node agent spawned the process: no longer waiting for the agent (the log's
            # progress, where the runtime writes one, takes over from here).
            spawned = event.get("attempt") == actor.attempt and actor.state == STARTING and event.get("pid")
            if spawned and (actor.progress or {}).get("stage") == "queued":
                actor.progress = {"stage": "process started", "percent": 1, "message": f"pid {event['pid']}"}
            return
        stopped_for_swap = event.get("state") in (STOPPED, FAILED) and event.get("attempt") == actor.attempt
        if actor.name in self._swapping and stopped_for_swap:
            self._swapping.discard(actor.name)  # stopped by the node agent for a swap
            if actor.state == STOPPING:
                actor.state = STOPPED
            self._finish_stop(actor)
            return
        lost = event.get("state") in (FAILED, STOPPED) and actor.state in (READY, DRAINING)
        if lost and event.get("attempt") == actor.attempt:
            # Died or hung (health sweep), or stopped behind our back: the next request starts it again.
            log.warning(
                "runner of %s is gone: %s", actor.name, event.get("failure_reason") or event.get("state")
            )
            actor.state = FAILED if event.get("state") == FAILED else STOPPED
            actor.failure_reason = event.get("failure_reason", "")
            actor.log_excerpt = event.get("log_excerpt", "")
            actor.base_url = None
            self._cancel_ttl(actor)
            self._finish_stop(actor)

    async def refresh_catalog(self) -> None:
        begun = self.catalog_freshness.begin()
        catalog = await self.effects.load_catalog()
        if self.catalog_freshness.accept(begun):  # (not when a read begun later landed first)
            self.catalog = catalog
            self._admit()

    # --- internals: resolving and waiting -------------------------------------------------

    async def _resolve(self, requested: str, *, allow_disabled: bool = False) -> CatalogEntry:
        if self.catalog_freshness.stale():
            await self.refresh_catalog()
        entry = self.catalog.resolve(requested)
        if entry is None and self.catalog_freshness.age() > CATALOG_MISS_REFRESH_S:
            await self.refresh_catalog()  # added since the last catalog.changed we heard of
            entry = self.catalog.resolve(requested)
        if entry is None:
            raise ModelNotFound(requested)
        if not allow_disabled:
            if not entry.enabled:
                raise ModelDisabled(entry.name)
            if entry.state != "available":
                raise ModelFileUnavailable(entry.name, entry.state, entry.error)
        return entry

    def _actor(self, name: str) -> Actor:
        actor = self.actors.get(name)
        if actor is None:
            actor = self.actors[name] = Actor(name=name)
        return actor

    def _params_match(self, actor: Actor, params: dict[str, Any]) -> bool:
        """A request's runner parameters are met when each one equals what the runner runs with."""
        if not params:
            return True
        entry = self.catalog.entries.get(actor.name)
        running = {**(entry.parameters if entry else {}), **actor.params}
        return all(running.get(key) == value for key, value in params.items())

    def _lease(self, actor: Actor, load_seconds: float) -> Lease:
        actor.in_flight += 1
        self._cancel_ttl(actor)
        return Lease(self, actor, load_seconds)

    async def _wait_for(
        self, actor: Actor, entry: CatalogEntry, params: dict[str, Any], timeout: float | None
    ) -> Lease:
        if sum(len(a.waiters) for a in self.actors.values()) >= self.max_queued:
            raise QueueFull(
                entry.name, f"too many requests are waiting for models ({self.max_queued}); try again later"
            )
        loop = asyncio.get_running_loop()
        waiter = Waiter(loop.create_future(), params, self._clock())
        actor.waiters.append(waiter)
        if actor.state == READY:
            # Ready, but with other runner parameters: restart it once its requests finish.
            actor.next_params = params
            self._drain(actor, "restarting with new runner parameters")
        elif actor.state == FAILED:
            actor.state = STOPPED
        self._enqueue(actor)
        self._admit()
        limit = self.request_timeout if timeout is None else timeout
        try:
            return await asyncio.wait_for(asyncio.shield(waiter.future), limit)
        except TimeoutError:
            raise QueueTimeout(
                entry.name, f"model '{entry.name}' was not ready within {limit:g} s: {self._why(actor)}"
            ) from None
        except asyncio.CancelledError:
            # The client went away; a lease handed out at the same moment must not leak.
            if waiter.future.done() and not waiter.future.cancelled() and waiter.future.exception() is None:
                waiter.future.result().release()
            raise
        finally:
            if not waiter.future.done():
                waiter.future.cancel()
            with contextlib.suppress(ValueError):
                actor.waiters.remove(waiter)

    def _why(self, actor: Actor) -> str:
        if actor.state == STARTING:
            stage = (actor.progress or {}).get("stage")
            return f"it is still loading ({stage})" if stage else "it is still starting"
        if actor.state in (DRAINING, STOPPING):
            return f"it is being restarted or unloaded ({actor.in_flight} request(s) still running)"
        if actor.blocked:
            return actor.blocked
        if self.pending and self.pending[0] != actor.name:
            return f"it is queued behind '{self.pending[0]}'"
        return "the node agent did not start it (is the worker running?)"

    def _enqueue(self, actor: Actor) -> None:
        if actor.name not in self.pending and actor.state in (STOPPED, FAILED, DRAINING, STOPPING):
            self.pending.append(actor.name)

    # --- internals: admission -------------------------------------------------------------

    def _admit(self) -> None:
        """Serve the queue head(s): start, evict, wait or refuse. Re-entrant calls fold into one pass."""
        if self._admitting:
            self._admit_again = True
            return
        self._admitting = True
        try:
            self._admit_again = True
            while self._admit_again:
                self._admit_again = False
                self._admit_pass()
        finally:
            self._admitting = False

    def _admit_pass(self) -> None:
        while self.pending:
            actor = self.actors[self.pending[0]]
            live = [w for w in actor.waiters if not w.future.done()]
            if not live:
                self.pending.popleft()  # everyone waiting for it gave up
                actor.blocked = ""
                continue
            if actor.state in (STARTING, READY):
                self.pending.popleft()
                if actor.state == READY:
                    self._serve_waiters(actor)
                continue
            if actor.state in (DRAINING, STOPPING):
                actor.blocked = f"'{actor.name}' is stopping first"
                return  # it comes back as STOPPED, then starts again
            entry = self.catalog.entries.get(actor.name)
            if entry is None:
                self.pending.popleft()
                self._fail_waiters(actor, ModelNotFound(actor.name))
                continue
            params = dict(actor.next_params or live[0].params)
            wanted = eviction.Wanted(
                name=entry.name, memory=entry.memory_for(params), group=entry.group, exclusive=entry.exclusive
            )
            decision = eviction.plan_start(wanted, self._loaded(), self.limits)
            if decision.action == "start":
                self.pending.popleft()
                actor.blocked = ""
                self._begin_start(actor, entry, params, wanted.memory)
                continue
            actor.blocked = decision.reason
            if decision.action == "impossible":
                self.pending.popleft()
                self._fail_waiters(
                    actor,
                    ModelUnavailable(entry.name, f"model '{entry.name}' cannot be loaded: {decision.reason}"),
                )
                continue
            victims = [self.actors[name] for name in decision.victims]
            if self._can_swap(victims):
                # Every victim is idle: the node agent stops them and starts this one in one trip.
                self.pending.popleft()
                actor.blocked = ""
                for victim in victims:
                    log.info("unloading %s: evicted to make room for '%s'", victim.name, entry.name)
                    self._cancel_ttl(victim)
                    victim.state = STOPPING
                    self._swapping.add(victim.name)
                stop_first = tuple(self.catalog.entries[v.name] for v in victims)
                self._begin_start(actor, entry, params, wanted.memory, stop_first)
                continue
            for victim in victims:
                self._drain(victim, f"evicted to make room for '{entry.name}'")
            return  # strict FIFO: later models wait for the head

    def _can_swap(self, victims: list[Actor]) -> bool:
        """Victims that stop at once (ready, idle, in the catalog), and nothing else on its way out."""
        if not victims or any(
            v.state != READY or v.in_flight or v.name not in self.catalog.entries for v in victims
        ):
            return False
        names = {v.name for v in victims}
        return not any(a.state in (DRAINING, STOPPING) for a in self.actors.values() if a.name not in names)

    def _loaded(self) -> list[eviction.Loaded]:
        loaded = []
        for actor in self.actors.values():
            if actor.state not in (STARTING, READY, DRAINING, STOPPING):
                continue
            entry = self.catalog.entries.get(actor.name)
            loaded.append(
                eviction.Loaded(
                    name=actor.name,
                    state=actor.state,
                    in_flight=actor.in_flight,
                    last_used=actor.last_used,
                    pinned=bool(entry and entry.pinned),
                    group=entry.group if entry else "",
                    exclusive=bool(entry and entry.exclusive),
                    memory=actor.memory,
                )
            )
        return loaded

    def _serve_waiters(self, actor: Actor) -> None:
        now = self._clock()
        mismatched = False
        for waiter in list(actor.waiters):
            if waiter.future.done():
                continue
            if not self._params_match(actor, waiter.params):
                mismatched = True
                continue
            waiter.future.set_result(self._lease(actor, now - waiter.enqueued))
        if mismatched:
            pending = next(w for w in actor.waiters if not w.future.done())
            actor.next_params = pending.params
            self._drain(actor, "restarting with new runner parameters")
            self._enqueue(actor)

    def _fail_waiters(self, actor: Actor, error: SchedulerError) -> None:
        for waiter in actor.waiters:
            if not waiter.future.done():
                waiter.future.set_exception(error)

    # --- internals: starting and stopping -------------------------------------------------

    def _begin_start(
        self,
        actor: Actor,
        entry: CatalogEntry,
        params: dict[str, Any],
        memory: int,
        stop_first: tuple[CatalogEntry, ...] = (),
    ) -> None:
        actor.state = STARTING
        actor.attempt = uuid.uuid4().hex
        actor.next_params = params
        actor.memory = memory
        actor.vram = 0
        actor.progress = {"stage": "queued", "percent": 0, "message": ""}
        actor.failure_reason = ""
        actor.started_at = time.time()
        actor.ready_at = None
        actor.ready_or_failed = asyncio.Event()
        actor.stopped = asyncio.Event()
        self._spawn(self._run_start(actor, entry, params, memory, stop_first))

    async def _run_start(
        self,
        actor: Actor,
        entry: CatalogEntry,
        params: dict[str, Any],
        memory: int,
        stop_first: tuple[CatalogEntry, ...] = (),
    ) -> None:
        attempt = actor.attempt
        ttl = self._ttl_for(actor, entry)
        try:
            if stop_first:
                started = await self.effects.start(entry, attempt, params, ttl, memory, stop_first)
            else:
                started = await self.effects.start(entry, attempt, params, ttl, memory)
        except Exception as exc:
            self._swapped_out(stop_first)
            reason = exc.reason if isinstance(exc, StartFailed) else f"{type(exc).__name__}: {exc}"
            if attempt != actor.attempt:
                return
            actor.state = FAILED
            actor.failure_reason = reason
            actor.log_excerpt = getattr(exc, "log_excerpt", "")
            actor.progress = None
            actor.ready_or_failed.set()
            actor.stopped.set()
            self._fail_waiters(
                actor, ModelUnavailable(entry.name, f"model '{entry.name}' failed to start: {reason}")
            )
            self._admit()
            return
        self._swapped_out(stop_first)
        if attempt != actor.attempt or actor.state != STARTING:
            return
        actor.state = READY
        actor.base_url, actor.host, actor.port, actor.pid = (
            started.base_url,
            started.host,
            started.port,
            started.pid,
        )
        actor.params = params
        actor.next_params = {}
        actor.ready_at = time.time()
        actor.progress = None
        actor.last_used = self._clock()
        actor.last_used_wall = time.time()
        actor.ready_or_failed.set()
        self._serve_waiters(actor)
        if actor.in_flight == 0 and actor.state == READY:
            self._arm_ttl(actor)
        self._admit()

    def _swapped_out(self, stopped: tuple[CatalogEntry, ...]) -> None:
        """The node agent stops a swap's victims before it starts: once the start is over, they are
        stopped (their `stopped` events usually said so earlier)."""
        for entry in stopped:
            actor = self.actors.get(entry.name)
            if actor is not None and actor.name in self._swapping:
                self._swapping.discard(actor.name)
                if actor.state == STOPPING:
                    actor.state = STOPPED
                self._finish_stop(actor)

    def _drain(self, actor: Actor, why: str) -> None:
        """Take a ready runner out of service; it stops once its in-flight requests are done."""
        if actor.state != READY:
            return
        log.info("unloading %s: %s", actor.name, why)
        actor.state = DRAINING
        self._cancel_ttl(actor)
        if actor.in_flight == 0:
            self._begin_stop(actor)

    def _begin_stop(self, actor: Actor) -> None:
        entry = self.catalog.entries.get(actor.name)
        actor.state = STOPPING
        if entry is None:
            self._finish_stop(actor)
            return
        self._spawn(self._stop(actor, entry))

    async def _stop(self, actor: Actor, entry: CatalogEntry) -> None:
        try:
            await self.effects.stop(entry)
        except Exception:
            log.exception("stopping the runner of %s failed", entry.name)
        if actor.state == STOPPING:
            actor.state = STOPPED
        self._finish_stop(actor)

    def _finish_stop(self, actor: Actor) -> None:
        actor.base_url = None
        actor.port = None
        actor.pid = None
        actor.stopped.set()
        if actor.waiters:
            self._enqueue(actor)
        self._admit()

    # --- internals: leases, TTL, usage ----------------------------------------------------

    def _release_threadsafe(self, actor: Actor) -> None:
        if self._loop is not None and threading.get_ident() != self._thread_id:
            self._loop.call_soon_threadsafe(self._release, actor)
        else:
            self._release(actor)

    def _release(self, actor: Actor) -> None:
        actor.in_flight = max(0, actor.in_flight - 1)
        actor.last_used = self._clock()
        actor.last_used_wall = time.time()
        entry = self.catalog.entries.get(actor.name)
        if entry is not None:
            self._usage_dirty[entry.id] = actor.last_used_wall
        if actor.in_flight:
            return
        if actor.state == DRAINING:
            self._begin_stop(actor)
        elif actor.state == READY:
            self._arm_ttl(actor)
            if self.pending:
                self._admit()  # an eviction may have been waiting for this runner to be idle

    def _ttl_for(self, actor: Actor, entry: CatalogEntry | None) -> int | None:
        """Idle seconds before unloading, None for never; a request's ttl wins (0 = at once)."""
        if entry is not None and entry.pinned:
            return None
        if actor.ttl_override is not None:
            return None if actor.ttl_override < 0 else actor.ttl_override
        configured = (
            entry.ttl_seconds if entry is not None and entry.ttl_seconds is not None else self.default_ttl
        )
        return configured or None  # 0 in the settings means never

    def _arm_ttl(self, actor: Actor, *, count_idle_time: bool = False) -> None:
        """Stop the runner after its TTL of idleness; `count_idle_time`: idle time so far counts
        (a TTL changed while it sat idle)."""
        self._cancel_ttl(actor)
        ttl = self._ttl_for(actor, self.catalog.entries.get(actor.name))
        if ttl is None:
            return
        used = actor.last_used
        delay = max(0.0, ttl - (self._clock() - used)) if count_idle_time else ttl

        def expire() -> None:
            actor.ttl_timer = None
            if actor.state == READY and actor.in_flight == 0 and actor.last_used == used:
                self._drain(actor, f"idle for {ttl} s")

        call_later = self._call_later or asyncio.get_running_loop().call_later
        actor.ttl_timer = call_later(delay, expire)

    def _cancel_ttl(self, actor: Actor) -> None:
        if actor.ttl_timer is not None:
            actor.ttl_timer.cancel()
            actor.ttl_timer = None

    async def _housekeeping_forever(self) -> None:
        rounds = 0
        while True:
            await asyncio.sleep(USAGE_FLUSH_S)
            await self.flush_usage()
            rounds += 1
            if rounds % CATALOG_REFRESH_ROUNDS == 0:
                # A safety net for changes whose catalog.changed / settings.changed event was lost.
                with contextlib.suppress(Exception):
                    await self.refresh_catalog()
                with contextlib.suppress(Exception):
                    from llamaproxy.runtime import invalidate_limits

                    invalidate_limits()
                    await self.reload_limits()

    async def flush_usage(self) -> None:
        if not self._usage_dirty:
            return
        used, self._usage_dirty = self._usage_dirty, {}
        try:
            await self.effects.persist_usage(used)
        except Exception:
            log.warning("could not record last use of runners", exc_info=True)

    def _spawn(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("scheduler task failed", exc_info=task.exception())

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for actor in self.actors.values():
            self._cancel_ttl(actor)


def _iso(timestamp: float | None) -> str | None:
    return datetime.fromtimestamp(timestamp, UTC).isoformat() if timestamp else None


# --- the process-wide scheduler the faces call ---------------------------------------------------

_scheduler: Scheduler | None = None


def _heard(event: dict[str, Any]) -> None:
    scheduler = _scheduler
    if event.get("type") == "catalog.changed" and scheduler is not None:
        scheduler.catalog_freshness.changed()


listen_locally(_heard)


def get_scheduler() -> Scheduler:
    """The gateway's scheduler, bound to the running event loop (tests get a fresh one per loop)."""
    global _scheduler
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if _scheduler is None or (loop is not None and _scheduler._loop not in (None, loop)):
        from django.conf import settings

        from llamaproxy.runtime import current_limits
        from runners.effects import CeleryEffects

        # Never blocks the loop: the last limits known (or the environment's) until start-up reads them.
        limits = current_limits()
        _scheduler = Scheduler(
            CeleryEffects(),
            max_loaded=limits.max_loaded_models,
            memory_budget=limits.memory_budget,
            default_ttl=limits.default_ttl,
            request_timeout=limits.request_timeout,
            max_queued=settings.LLAMAPROXY_MAX_QUEUE,
            preload=list(settings.LLAMAPROXY_PRELOAD),
        )
    return _scheduler


async def acquire(
    model: str, *, ttl: int | None = None, runner_params: dict | None = None, timeout: float | None = None
) -> Lease:
    return await get_scheduler().acquire(model, ttl=ttl, runner_params=runner_params, timeout=timeout)


async def load(model: str, ttl: int | None = None) -> dict:
    return await get_scheduler().load(model, ttl=ttl)


async def unload(model: str) -> bool:
    return await get_scheduler().unload(model)


async def unload_all() -> int:
    return await get_scheduler().unload_all()


async def restart(model: str) -> dict:
    return await get_scheduler().restart(model)


def status() -> list[dict]:
    return get_scheduler().status()


async def status_async() -> list[dict]:
    """status() once the scheduler has reconciled (the manage API's view)."""
    scheduler = get_scheduler()
    await scheduler.ensure_started()
    return scheduler.status()


def catalog_snapshot() -> Catalog:
    """The scheduler's in-memory catalog view (refreshed on catalog.changed)."""
    return get_scheduler().catalog


def schedule_startup(loop: asyncio.AbstractEventLoop) -> None:
    """Reconcile and preload as soon as `loop` runs (the gateway calls this at start-up)."""

    def begin() -> None:
        loop.create_task(get_scheduler().ensure_started())

    loop.call_soon_threadsafe(begin)
