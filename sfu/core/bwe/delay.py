"""Delay-based congestion detection: packet groups, the trendline filter, the overuse detector.

The sender knows when each packet left; transport-cc feedback says when it arrived (on the
viewer's clock: only differences are used). Packets are grouped into bursts sent within
`GROUP_LENGTH` (5 ms); for consecutive groups the one-way delay variation is
`arrival delta - send delta`. Its accumulation, smoothed, is regressed against arrival time
over a window of groups: a positive slope means a queue is building (overuse), a negative one
that a queue is draining (underuse). The threshold the slope is compared with adapts, so a
competing loss-based flow does not starve this one (Carlucci et al., "Analysis and design of
the Google congestion control for WebRTC", 2016; libwebrtc's trendline_estimator and
inter_arrival).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from sfu.core.bwe.base import NORMAL, OVERUSING, UNDERUSING

GROUP_LENGTH = 0.005  # a burst: packets sent within 5 ms of the group's first
BURST_DELTA = 0.005  # arriving <5 ms after the previous group with shrinking delay: same burst
MAX_BURST = 0.1
ARRIVAL_RESET = 3.0  # an arrival-clock jump larger than this resets the grouping

TRENDLINE_WINDOW = 20
SMOOTHING = 0.9
THRESHOLD_GAIN = 4.0
MAX_DELTAS = 60

INITIAL_THRESHOLD = 12.5  # ms
K_UP = 0.0087
K_DOWN = 0.039
OVERUSE_TIME = 0.010
MAX_ADAPT_OFFSET = 15.0
MIN_THRESHOLD = 6.0
MAX_THRESHOLD = 600.0


@dataclass(slots=True)
class _Group:
    first_send: float
    last_send: float
    first_arrival: float
    last_arrival: float
    size: int


@dataclass(frozen=True, slots=True)
class GroupDelta:
    send_delta: float  # seconds between the two groups' last send times
    arrival_delta: float  # seconds between their last arrivals
    size_delta: int
    arrival: float  # the newer group's last arrival (viewer clock)


class InterArrival:
    """Groups packets (in send order) into bursts and yields deltas between complete groups."""

    def __init__(self, group_length: float = GROUP_LENGTH) -> None:
        self._length = group_length
        self._current: _Group | None = None
        self._previous: _Group | None = None
        self.resets = 0

    def add(self, send_time: float, arrival: float, size: int) -> GroupDelta | None:
        """One received packet; the delta between the two latest complete groups, if one
        just completed."""
        cur = self._current
        if cur is None:
            self._current = _Group(send_time, send_time, arrival, arrival, size)
            return None
        if send_time < cur.first_send:
            return None  # reordered into an older group: ignore, as libwebrtc does
        if self._same_group(cur, send_time, arrival):
            cur.last_send = max(cur.last_send, send_time)
            cur.last_arrival = max(cur.last_arrival, arrival)
            cur.size += size
            return None
        prev = self._previous
        out: GroupDelta | None = None
        if prev is not None:
            send_delta = cur.last_send - prev.last_send
            arrival_delta = cur.last_arrival - prev.last_arrival
            if arrival_delta > ARRIVAL_RESET or arrival_delta < 0:
                # The viewer's clock jumped or the stream paused: start over.
                self.resets += 1
                self._previous = None
                self._current = _Group(send_time, send_time, arrival, arrival, size)
                return None
            out = GroupDelta(send_delta, arrival_delta, cur.size - prev.size, cur.last_arrival)
        self._previous = cur
        self._current = _Group(send_time, send_time, arrival, arrival, size)
        return out

    def _same_group(self, cur: _Group, send_time: float, arrival: float) -> bool:
        if send_time - cur.first_send <= self._length:
            return True
        # A burst released together by a queue: arrives almost at once with less delay.
        arrival_delta = arrival - cur.last_arrival
        propagation_delta = arrival_delta - (send_time - cur.last_send)
        return (
            propagation_delta < 0
            and arrival_delta <= BURST_DELTA
            and arrival - cur.first_arrival < MAX_BURST
        )


class TrendlineEstimator:
    """Slope of the smoothed accumulated delay variation over the last `window` groups (ms/ms),
    scaled as libwebrtc does: `min(n, 60) * slope * gain`, the "modified trend" compared with
    the detector's threshold (in ms)."""

    def __init__(
        self, window: int = TRENDLINE_WINDOW, smoothing: float = SMOOTHING,
        gain: float = THRESHOLD_GAIN,
    ) -> None:
        self._window = window
        self._smoothing = smoothing
        self._gain = gain
        self._points: deque[tuple[float, float]] = deque(maxlen=window)
        self._first_arrival: float | None = None
        self._accumulated = 0.0
        self._smoothed = 0.0
        self.num_deltas = 0
        self.slope = 0.0

    def update(self, delta: GroupDelta) -> float:
        """Feed one group delta; returns the modified trend (ms)."""
        variation_ms = (delta.arrival_delta - delta.send_delta) * 1000.0
        self.num_deltas = min(self.num_deltas + 1, 1000)
        if self._first_arrival is None:
            self._first_arrival = delta.arrival
        self._accumulated += variation_ms
        self._smoothed = self._smoothing * self._smoothed + (1 - self._smoothing) * self._accumulated
        self._points.append(((delta.arrival - self._first_arrival) * 1000.0, self._smoothed))
        if len(self._points) == self._window:
            slope = _slope(self._points)
            if slope is not None:
                self.slope = slope
        return self.modified_trend

    @property
    def modified_trend(self) -> float:
        return min(self.num_deltas, MAX_DELTAS) * self.slope * self._gain


def _slope(points: deque[tuple[float, float]]) -> float | None:
    """Least-squares slope, in one pass (it runs once per packet group of every viewer).

    Coordinates are taken relative to the first point so the sums stay small (x grows with
    the connection's age) and `n * sxx - sx * sx` does not cancel catastrophically."""
    n = len(points)
    x0, y0 = points[0]
    sx = sy = sxy = sxx = 0.0
    for x, y in points:
        x -= x0
        y -= y0
        sx += x
        sy += y
        sxy += x * y
        sxx += x * x
    den = n * sxx - sx * sx
    return (n * sxy - sx * sy) / den if den > 0 else None


class OveruseDetector:
    """Compares the modified trend with an adaptive threshold.

    Overuse needs the trend above the threshold for more than `OVERUSE_TIME` of send time and
    at least two consecutive groups, and not falling; underuse is a trend below -threshold.
    The threshold moves towards |trend| (fast up `K_UP`, faster down `K_DOWN`, per ms) so a
    standing bias from a competing flow is tolerated, clamped to [6, 600] ms.
    """

    def __init__(self, threshold: float = INITIAL_THRESHOLD) -> None:
        self.threshold = threshold
        self.state = NORMAL
        self._time_over = -1.0
        self._count = 0
        self._prev_trend = 0.0
        self._last_update: float | None = None

    def detect(self, trend: float, send_delta: float, num_deltas: int, now: float) -> str:
        if num_deltas < 2:
            return self.state
        if trend > self.threshold:
            if self._time_over < 0:
                self._time_over = send_delta / 2  # assume overuse began halfway
            else:
                self._time_over += send_delta
            self._count += 1
            if self._time_over > OVERUSE_TIME and self._count > 1 and trend >= self._prev_trend:
                self._time_over = 0.0
                self._count = 0
                self.state = OVERUSING
        elif trend < -self.threshold:
            self._time_over = -1.0
            self._count = 0
            self.state = UNDERUSING
        else:
            self._time_over = -1.0
            self._count = 0
            self.state = NORMAL
        self._prev_trend = trend
        self._adapt(trend, now)
        return self.state

    def _adapt(self, trend: float, now: float) -> None:
        if self._last_update is None:
            self._last_update = now
        if abs(trend) > self.threshold + MAX_ADAPT_OFFSET:
            # A spike (a keyframe burst, a route change) should not drag the threshold.
            self._last_update = now
            return
        k = K_DOWN if abs(trend) < self.threshold else K_UP
        dt_ms = min((now - self._last_update) * 1000.0, 100.0)
        self.threshold += k * (abs(trend) - self.threshold) * dt_ms
        self.threshold = min(MAX_THRESHOLD, max(MIN_THRESHOLD, self.threshold))
        self._last_update = now
