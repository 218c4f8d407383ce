"""A clock that moves only when a test says so, with timers that fire in order."""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["FakeClock", "Timer"]


@dataclass(eq=False, slots=True)
class Timer:
    """A callback scheduled on a `FakeClock`; `cancel()` stops it from firing."""

    when: float
    callback: Callable[[], object]
    cancelled: bool = field(default=False)

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """Monotonic time in float seconds that advances only through `advance`.

    Protocol cores take `now` as an argument; a test passes `clock.now()` and moves time on with
    `advance(dt)`, which fires every timer that falls due, earliest first (ties in the order they
    were scheduled). While a timer's callback runs, `now()` is that timer's deadline, and timers it
    schedules inside the advanced window fire in the same call.
    """

    def __init__(self, start: float = 0.0) -> None:
        if not math.isfinite(start):
            raise ValueError(f"start must be a finite number of seconds, got {start!r}")
        self._now = float(start)
        self._timers: list[tuple[float, int, Timer]] = []
        self._scheduled = 0

    def now(self) -> float:
        """The current time in seconds."""
        return self._now

    def call_at(self, when: float, callback: Callable[[], object]) -> Timer:
        """Run `callback()` at time `when` (on the next `advance` if that is already past)."""
        if not math.isfinite(when):
            raise ValueError(f"a timer needs a finite deadline, got {when!r}")
        timer = Timer(float(when), callback)
        heapq.heappush(self._timers, (timer.when, self._scheduled, timer))
        self._scheduled += 1
        return timer

    def call_later(self, delay: float, callback: Callable[[], object]) -> Timer:
        """Run `callback()` `delay` seconds from now."""
        return self.call_at(self._now + delay, callback)

    def next_deadline(self) -> float | None:
        """The deadline of the earliest timer that is still armed, or None."""
        while self._timers and self._timers[0][2].cancelled:
            heapq.heappop(self._timers)
        return self._timers[0][0] if self._timers else None

    def pending(self) -> int:
        """How many timers are armed (scheduled and not cancelled)."""
        return sum(1 for _, _, timer in self._timers if not timer.cancelled)

    def advance(self, dt: float) -> int:
        """Move time forward by `dt` seconds, firing due timers in order; returns how many fired."""
        if not dt >= 0 or not math.isfinite(dt):
            raise ValueError(f"time only moves forward by a finite amount, got dt={dt!r}")
        target = self._now + dt
        fired = 0
        while self._timers and self._timers[0][0] <= target:
            when, _, timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            self._now = max(self._now, when)
            timer.callback()
            fired += 1
        self._now = target
        return fired
