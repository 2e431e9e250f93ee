"""Discrete-event engine: a heap of (time, seq, callback) driving a virtual clock.

Events scheduled for the same instant run in the order they were scheduled (the `seq`
tie-breaker), so a run is a pure function of its inputs and seed. Components either schedule
callbacks directly or expose `get_timer() -> float | None` / `handle_timer(now)` and are
re-armed through `arm`, the same contract the node's sans-I/O cores follow.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Protocol

from bench.sim.clock import Clock

Callback = Callable[[float], None]


class TimerComponent(Protocol):
    def get_timer(self) -> float | None: ...

    def handle_timer(self, now: float) -> None: ...


class Engine:
    """Runs callbacks in virtual-time order until a horizon."""

    def __init__(self, start: float = 0.0) -> None:
        self.clock = Clock(start)
        self._heap: list[tuple[float, int, Callback]] = []
        self._seq = 0
        self.events = 0

    @property
    def now(self) -> float:
        return self.clock.now

    def schedule(self, t: float, callback: Callback) -> None:
        """Run `callback(t)` at virtual time `t` (never earlier than now)."""
        if t < self.clock.now:
            t = self.clock.now
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, callback))

    def every(self, interval: float, callback: Callback, start: float | None = None,
              until: float | None = None) -> None:
        """Run `callback` periodically from `start` (default: now + interval)."""
        if interval <= 0:
            raise ValueError("interval must be positive")

        def fire(now: float) -> None:
            callback(now)
            nxt = now + interval
            if until is None or nxt <= until:
                self.schedule(nxt, fire)

        self.schedule(self.clock.now + interval if start is None else start, fire)

    def arm(self, component: TimerComponent) -> None:
        """Schedule `component.handle_timer` at its `get_timer()`, if it has one."""
        t = component.get_timer()
        if t is not None:
            self.schedule(t, component.handle_timer)

    def run(self, until: float, progress: Callable[[float], None] | None = None,
            progress_step: float = 1.0) -> None:
        """Process events up to and including `until`; then the clock reads `until`.

        `progress(now)` is called at most once per `progress_step` of virtual time.
        """
        heap = self._heap
        pop = heapq.heappop
        clock = self.clock
        next_progress = clock.now + progress_step
        count = 0
        while heap and heap[0][0] <= until:
            t, _, callback = pop(heap)
            clock.now = t
            callback(t)
            count += 1
            if progress is not None and t >= next_progress:
                progress(t)
                next_progress = t + progress_step
        self.events += count
        if clock.now < until:
            clock.now = until
        if progress is not None:
            progress(until)
