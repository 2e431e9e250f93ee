"""Client-side estimate of the server clock, NTP style, over datachannel ping/pong.

Sales carry their window as server timestamps, so a countdown ends at the same instant for
every viewer only if each client knows ``server_time - local_time``. A ping/pong exchange
gives one sample:

    offset = server_time - (client_send + client_recv) / 2
    delay  = client_recv - client_send

The offset is exact when the two directions take equal time; otherwise it is off by half
the asymmetry, at most ``delay / 2``. Queueing only ever adds delay, so the sample with the
smallest delay is the one least spoiled by it: the estimate is the offset of the min-delay
sample among the last ``window`` samples, and ``uncertainty`` is half that delay (a hard
bound on the error, not a statistical one).

All times are floats in seconds; ``client_send``/``client_recv``/``now`` are on the client's
monotonic or wall clock, whichever it uses consistently; ``server_time`` is server Unix time.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ClockSample:
    offset: float
    delay: float
    at: float  # client_recv: when the sample was taken, on the client clock


class ClockOffsetEstimator:
    def __init__(self, window: int = 8, resync_interval: float = 30.0) -> None:
        if window < 1:
            raise ValueError("window must be at least 1")
        if resync_interval <= 0:
            raise ValueError("resync_interval must be positive")
        self.window = window
        self.resync_interval = resync_interval
        self._samples: deque[ClockSample] = deque(maxlen=window)
        self._best: ClockSample | None = None

    def add_sample(self, client_send: float, server_time: float, client_recv: float) -> ClockSample:
        """Record one ping/pong round trip; raise ValueError for an impossible one."""
        if not all(math.isfinite(x) for x in (client_send, server_time, client_recv)):
            raise ValueError("clock sample times must be finite")
        delay = client_recv - client_send
        if delay < 0:
            # A reply before its request: the client clock jumped; the sample means nothing.
            raise ValueError("client_recv is before client_send")
        sample = ClockSample(
            offset=server_time - (client_send + client_recv) / 2, delay=delay, at=client_recv
        )
        self._samples.append(sample)
        # Recomputed per sample (window is small) so the best one ages out with the window.
        self._best = min(self._samples, key=lambda s: s.delay)
        return sample

    @property
    def samples(self) -> tuple[ClockSample, ...]:
        return tuple(self._samples)

    @property
    def offset(self) -> float | None:
        """``server_time - client_time`` in seconds, or None before the first sample."""
        return None if self._best is None else self._best.offset

    @property
    def uncertainty(self) -> float | None:
        """Bound on the offset's error (half the best round trip), or None without samples."""
        return None if self._best is None else self._best.delay / 2

    def server_time(self, client_now: float) -> float | None:
        """The server clock's reading at local time ``client_now``, once estimated."""
        return None if self._best is None else client_now + self._best.offset

    def needs_resync(self, now: float) -> bool:
        """True when the client should run another round of pings: before any sample, and
        ``resync_interval`` after the latest one (clocks drift, and a route can change)."""
        if not self._samples:
            return True
        return now - self._samples[-1].at >= self.resync_interval
