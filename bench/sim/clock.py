"""Virtual clock for the simulator: time only moves when the engine says so.

Nothing in `bench.sim` reads the wall clock; every component is handed `now` by the engine,
which is what makes a run deterministic for a seed and lets ten minutes of media simulate
in seconds.
"""

from __future__ import annotations


class Clock:
    """Simulated seconds since the start of the run."""

    __slots__ = ("now",)

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def advance(self, t: float) -> None:
        if t < self.now:
            raise ValueError(f"virtual time cannot go back ({t} < {self.now})")
        self.now = t
