"""When an in-memory copy of some rows (the catalog view, API keys, the scheduler's catalog)
must be read again: after `max_age` seconds, or after a write this process made (`changed()`,
thread-safe). Reads may overlap and finish out of order; one begun before a write never
replaces one begun after it.

    version = freshness.begin()
    rows = await read()
    if freshness.accept(version):
        self.rows = rows
"""

from __future__ import annotations

import math
import time


class Freshness:
    def __init__(self, max_age: float = math.inf) -> None:
        self.max_age = max_age
        self._writes = 0  # writes heard of
        self._applied = -1  # writes the copy in use was read after
        self._read_at = -math.inf

    def changed(self) -> None:
        """A write happened: the next use reads again. Thread-safe (one increment)."""
        self._writes += 1

    def stale(self) -> bool:
        return self._writes != self._applied or time.monotonic() - self._read_at > self.max_age

    def age(self) -> float:
        """Seconds since the copy in use was read."""
        return time.monotonic() - self._read_at

    def begin(self) -> tuple[int, float]:
        """Note what a read about to start will reflect; pass the result to accept()."""
        return self._writes, time.monotonic()

    def accept(self, begun: tuple[int, float]) -> bool:
        """Whether the read begun so is at least as new as the copy in use (then it is in use)."""
        writes, started = begun
        if writes < self._applied:
            return False
        self._applied, self._read_at = writes, started
        return True
