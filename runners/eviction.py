"""Which runners must stop before a model can start: a pure function with table tests.

The scheduler asks `plan_start` each time the head of its queue wants to start, with what is
loaded right now; the answer is to start, to evict some runners first (they drain, then stop),
to wait for runners already going, or that the start can never happen under these limits.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

Action = Literal["start", "evict", "wait", "impossible"]

# States of a runner that holds (or is about to hold) memory and a slot.
STARTING, READY, DRAINING, STOPPING = "starting", "ready", "draining", "stopping"
GOING = (DRAINING, STOPPING)


@dataclass(frozen=True)
class Loaded:
    """A runner that occupies a slot: starting, ready, draining (evicted, requests finishing) or stopping."""

    name: str
    state: str = READY
    in_flight: int = 0
    last_used: float = 0.0
    pinned: bool = False
    group: str = ""
    exclusive: bool = False
    memory: int = 0


@dataclass(frozen=True)
class Wanted:
    name: str
    memory: int = 0
    group: str = ""
    exclusive: bool = False


@dataclass(frozen=True)
class Limits:
    max_loaded: int = 1  # 0 = no limit
    memory_budget: int | None = None


@dataclass(frozen=True)
class Decision:
    action: Action
    victims: tuple[str, ...] = field(default=())
    reason: str = ""


def _fits(wanted: Wanted, occupying: Sequence[Loaded], limits: Limits) -> bool:
    if limits.max_loaded and len(occupying) + 1 > limits.max_loaded:
        return False
    if limits.memory_budget is not None:
        return sum(r.memory for r in occupying) + wanted.memory <= limits.memory_budget
    return True


def _conflicts(wanted: Wanted, runner: Loaded) -> bool:
    """Exclusive groups: an exclusive member runs alone in its group, and evicts its peers."""
    return bool(wanted.group) and runner.group == wanted.group and (wanted.exclusive or runner.exclusive)


def _eviction_order(runners: Iterable[Loaded]) -> list[Loaded]:
    # Idle runners first (they stop at once, busy ones must drain), then least recently used.
    return sorted(runners, key=lambda r: (r.in_flight > 0, r.last_used, r.name))


def _names(runners: Iterable[Loaded]) -> str:
    return ", ".join(f"'{r.name}'" for r in runners)


def plan_start(wanted: Wanted, loaded: Sequence[Loaded], limits: Limits) -> Decision:
    others = [r for r in loaded if r.name != wanted.name]
    if limits.memory_budget is not None and wanted.memory > limits.memory_budget:
        return Decision(
            "impossible",
            reason=f"'{wanted.name}' needs about {_gib(wanted.memory)} but the memory budget is {_gib(limits.memory_budget)}",
        )

    conflicting = [r for r in others if _conflicts(wanted, r)]
    pinned_conflict = [r for r in conflicting if r.pinned]
    if pinned_conflict:
        return Decision(
            "impossible",
            reason=f"{_names(pinned_conflict)} is pinned and exclusive in group '{wanted.group}'",
        )
    if not conflicting and _fits(wanted, others, limits):
        return Decision("start")

    going = [r for r in others if r.state in GOING]
    victims = [r for r in conflicting if r.state not in GOING]
    if any(r.state == STARTING for r in victims):
        starting = [r for r in victims if r.state == STARTING]
        return Decision(
            "wait", reason=f"waiting for {_names(starting)} to finish starting before it is unloaded"
        )

    remaining = [r for r in others if r not in conflicting and r.state not in GOING]
    for candidate in _eviction_order(r for r in remaining if not r.pinned and r.state == READY):
        if _fits(wanted, remaining, limits):
            break
        victims.append(candidate)
        remaining.remove(candidate)

    if not _fits(wanted, remaining, limits):
        starting = [r for r in remaining if r.state == STARTING]
        if starting:
            return Decision("wait", reason=f"waiting for {_names(starting)} to finish starting")
        pinned = [r for r in remaining if r.pinned]
        return Decision(
            "impossible", reason=f"pinned models {_names(pinned)} leave no room for '{wanted.name}'"
        )
    if victims:
        busy = [r for r in victims if r.in_flight]
        reason = f"unloading {_names(victims)} to make room"
        if busy:
            reason += f" (waiting for {_names(busy)} to finish {sum(r.in_flight for r in busy)} request(s))"
        return Decision("evict", victims=tuple(r.name for r in victims), reason=reason)
    return Decision("wait", reason=f"waiting for {_names(going)} to stop")


def _gib(size: int) -> str:
    return f"{size / 1024**3:.1f} GiB"
