"""Loss-based bound on the estimate (libwebrtc's classic send_side_bandwidth_estimation).

Per loss report (from transport-cc feedback or RTCP receiver reports):
* more than 10 % lost -> cut to (1 - loss/2) x the current rate, at most once per
  300 ms + RTT (give the cut time to show);
* less than 2 % lost -> raise the bound by 8 %/s; once it is well above the delay-based
  estimate it no longer constrains anything and is lifted;
* in between -> hold;
* a probe result lifts the bound to the rate it measured (`lift`): after a burst of losses
  (an outage) 8 %/s would take tens of seconds to give back what a probe can show at once.
The final target is min(delay-based, loss-based).
"""

from __future__ import annotations

LOW_LOSS = 0.02
HIGH_LOSS = 0.10
DECREASE_INTERVAL = 0.3
INCREASE_PER_SECOND = 1.08


class LossBasedBound:
    def __init__(self) -> None:
        self.bound: float | None = None
        self.last_fraction = 0.0
        self._last_decrease: float | None = None
        self._last_update: float | None = None
        self.decreases = 0

    def update(self, fraction_lost: float, current: float, rtt: float, now: float) -> None:
        """A loss measurement over the last interval; `current` is the target in force."""
        self.last_fraction = fraction_lost
        dt = 0.0 if self._last_update is None else min(1.0, now - self._last_update)
        self._last_update = now
        if fraction_lost > HIGH_LOSS:
            if self._last_decrease is None or now - self._last_decrease >= DECREASE_INTERVAL + rtt:
                base = current if self.bound is None else min(self.bound, current)
                self.bound = base * (1 - 0.5 * fraction_lost)
                self._last_decrease = now
                self.decreases += 1
        elif fraction_lost < LOW_LOSS and self.bound is not None:
            self.bound *= INCREASE_PER_SECOND ** dt
            self.bound += 1000 * dt
            if self.bound > 1.5 * current:
                self.bound = None

    def lift(self, bitrate: float) -> None:
        """A probe measured `bitrate` through the path: the bound is at least that."""
        if self.bound is not None and self.bound < bitrate:
            self.bound = bitrate

    def apply(self, bitrate: float) -> float:
        return bitrate if self.bound is None else min(bitrate, self.bound)
