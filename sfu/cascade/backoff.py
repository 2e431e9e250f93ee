"""Reconnection delays for an edge whose origin went away (sans-I/O).

Exponential from `initial` to a ceiling of `maximum`, with a little jitter so that the
edges of a cluster do not all knock on a restarted origin at the same instant. `reset`
after a link authenticated.
"""

from __future__ import annotations

import random

INITIAL = 0.25
MAXIMUM = 5.0
FACTOR = 2.0
JITTER = 0.1


class Backoff:
    def __init__(self, *, initial: float = INITIAL, maximum: float = MAXIMUM,
                 factor: float = FACTOR, jitter: float = JITTER,
                 rng: random.Random | None = None) -> None:
        if not 0 < initial <= maximum or factor < 1 or not 0 <= jitter < 1:
            raise ValueError("need 0 < initial <= maximum, factor >= 1, 0 <= jitter < 1")
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.jitter = jitter
        self._rng = rng or random.Random()
        self._next = initial
        self.attempts = 0

    def delay(self) -> float:
        """The wait before the next attempt (and the one after grows)."""
        self.attempts += 1
        base = self._next
        self._next = min(self.maximum, self._next * self.factor)
        return min(self.maximum, base * (1 + self.jitter * (2 * self._rng.random() - 1)))

    def reset(self) -> None:
        self._next = self.initial
        self.attempts = 0
