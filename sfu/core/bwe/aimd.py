"""Additive-increase / multiplicative-decrease rate control driven by the delay detector.

State machine (libwebrtc aimd_rate_control, GCC draft section 5.5):
* overusing -> decrease to `beta` x the measured throughput (acknowledged bitrate), then hold;
* underusing -> hold (a queue is draining: do not add to it);
* normal -> increase: multiplicatively (8 %/s) while far from the link capacity seen at the
  last decreases, additively (about one packet per response time) when close to it.
The estimate never exceeds 1.5 x the throughput + 10 kbit/s, so an application-limited sender
does not inflate it, and while the throughput is below `ALR_FRACTION` of the estimate (the
application-limited region: an SFU forwarding a fixed simulcast layer is there most of the
time) it does not grow at all (libwebrtc's no-increase-in-ALR): probes are what raise it
beyond what was sent. Otherwise a key frame's acknowledged burst lets it creep above the link,
and the next key frame paced at that rate overfills the bottleneck.
"""

from __future__ import annotations

import math

from sfu.core.bwe.base import NORMAL, OVERUSING, UNDERUSING

BETA = 0.85
MULTIPLICATIVE = 1.08  # per second
MIN_ADDITIVE = 4000.0  # bits/s per second
PACKET_BITS = 1200 * 8
FPS = 30.0
ALR_FRACTION = 0.65


class LinkCapacity:
    """Running mean and normalised variance of the throughput at the decreases."""

    def __init__(self) -> None:
        self.estimate: float | None = None
        self._var = 0.4  # normalised: var / estimate (kbps), as libwebrtc keeps it

    def update(self, sample: float, alpha: float = 0.05) -> None:
        kbps = sample / 1000
        if self.estimate is None:
            self.estimate = kbps * 1000
            return
        est = self.estimate / 1000
        est = (1 - alpha) * est + alpha * kbps
        norm = max(est, 1.0)
        err = est - kbps
        self._var = (1 - alpha) * self._var + alpha * err * err / norm
        self._var = min(2.5, max(0.4, self._var))
        self.estimate = est * 1000

    def upper_bound(self) -> float:
        if self.estimate is None:
            return math.inf
        kbps = self.estimate / 1000
        return (kbps + 3 * math.sqrt(kbps * self._var)) * 1000

    def lower_bound(self) -> float:
        if self.estimate is None:
            return 0.0
        kbps = self.estimate / 1000
        return max(0.0, kbps - 3 * math.sqrt(kbps * self._var)) * 1000

    def reset(self) -> None:
        self.estimate = None


class AimdRateControl:
    def __init__(
        self, start_bitrate: float, *, min_bitrate: float = 30_000.0, max_bitrate: float = 50e6,
        beta: float = BETA,
    ) -> None:
        self.bitrate = start_bitrate
        self.min_bitrate = min_bitrate
        self.max_bitrate = max_bitrate
        self.beta = beta
        self.capacity = LinkCapacity()
        self.rtt = 0.1
        self._state = "hold"  # hold | increase | decrease
        self._last_change: float | None = None
        self.last_decrease: float | None = None
        self.decreases = 0

    def set_estimate(self, bitrate: float, now: float) -> None:
        """Jump to `bitrate` (a probe result, or a loss-based cut)."""
        self.bitrate = min(self.max_bitrate, max(self.min_bitrate, bitrate))
        self._last_change = now

    def update(self, usage: str, acked: float | None, now: float) -> float:
        """One detector verdict with the current throughput; returns the new bitrate."""
        if self._last_change is None:
            self._last_change = now
        if usage == OVERUSING:
            self._state = "decrease"
        elif usage == UNDERUSING:
            self._state = "hold"
        elif usage == NORMAL and self._state == "hold":
            self._state = "increase"
            self._last_change = now  # count the increase from now, not from the hold
        dt = min(max(0.0, now - self._last_change), 1.0)
        bitrate = self.bitrate
        if self._state == "increase":
            if acked is not None and acked > self.capacity.upper_bound():
                self.capacity.reset()  # the link got faster: go back to multiplicative
            if acked is not None and acked < ALR_FRACTION * bitrate:
                pass  # application-limited: growth would be a guess, probes measure instead
            elif self.capacity.estimate is not None:
                bitrate += self._additive(bitrate) * dt
            else:
                bitrate *= MULTIPLICATIVE ** dt
            if acked is not None:
                # Limits growth only: never pulls the estimate below where it is (a probe
                # may have put it above what the application sends).
                bitrate = min(bitrate, max(1.5 * acked + 10_000, self.bitrate))
            self._last_change = now
        elif self._state == "decrease":
            if acked is not None:
                target = self.beta * acked
                if target > self.bitrate and self.capacity.estimate is not None:
                    target = self.beta * self.capacity.estimate
                if target < self.bitrate:
                    bitrate = target
                if acked < self.capacity.lower_bound():
                    self.capacity.reset()
                self.capacity.update(acked)
            else:
                bitrate = self.beta * self.bitrate
            self.decreases += 1
            self.last_decrease = now
            self._state = "hold"
            self._last_change = now
        else:
            self._last_change = now
        self.bitrate = min(self.max_bitrate, max(self.min_bitrate, bitrate))
        return self.bitrate

    def _additive(self, bitrate: float) -> float:
        bits_per_frame = bitrate / FPS
        packets = max(1.0, math.ceil(bits_per_frame / PACKET_BITS))
        avg_packet = bits_per_frame / packets
        response = self.rtt + 0.1
        return max(MIN_ADDITIVE, avg_packet / response)

    @property
    def near_capacity(self) -> bool:
        return self.capacity.estimate is not None
