"""Bench metrics: pure functions from recorded times and sizes to the numbers in a report.

No I/O and no clock: every function takes lists of floats (seconds, bytes, bits/s) and
returns plain values, so the definitions are unit-tested on hand-made inputs.
Definitions follow the W3C webrtc-stats spec where one exists (freezes).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

# webrtc-stats freezeCount: avg_frame_duration is the linear average of the last 30 rendered
# frames' durations; a freeze is a gap >= max(3 * avg, avg + 150 ms).
FREEZE_WINDOW = 30
FREEZE_MIN_INCREASE = 0.150


def percentile(values: Sequence[float], p: float) -> float | None:
    """The p-th percentile (0-100) with linear interpolation (numpy's default); None if empty."""
    if not 0 <= p <= 100:
        raise ValueError(f"percentile must be in [0, 100], got {p}")
    if not values:
        return None
    data = sorted(values)
    pos = (len(data) - 1) * p / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def latency_summary(latencies: Sequence[float], scale: float = 1000.0) -> dict[str, float | None]:
    """p50/p95/p99/mean/max of latencies in seconds, reported in ms (`scale`)."""
    def s(v: float | None) -> float | None:
        return None if v is None else v * scale

    return {
        "p50": s(percentile(latencies, 50)),
        "p95": s(percentile(latencies, 95)),
        "p99": s(percentile(latencies, 99)),
        "mean": s(sum(latencies) / len(latencies)) if latencies else None,
        "max": s(max(latencies)) if latencies else None,
        "count": len(latencies),
    }


@dataclass(frozen=True, slots=True)
class Freezes:
    count: int
    total_duration: float  # seconds, sum of the freezing inter-frame gaps
    starts: tuple[float, ...]  # render time of the frame before each freeze
    durations: tuple[float, ...] = ()  # length of each freeze (same order as starts)

    def as_dict(self) -> dict[str, float | int]:
        return {"count": self.count, "total_duration_s": self.total_duration}


def freezes(render_times: Sequence[float], window: int | None = FREEZE_WINDOW) -> Freezes:
    """Video freezes by the webrtc-stats definition (freezeCount, totalFreezesDuration).

    A gap between consecutively rendered frames is a freeze when it is at least
    max(3 * mean, mean + 150 ms), where mean is the average of the previous `window` frame
    durations (all previous ones when `window` is None). The first gap has no mean and
    is never a freeze. Every gap, freeze or not, enters the mean afterwards.
    """
    count = 0
    total = 0.0
    starts: list[float] = []
    lengths: list[float] = []
    durations: list[float] = []
    running = 0.0
    for i in range(1, len(render_times)):
        gap = render_times[i] - render_times[i - 1]
        if durations:
            n = len(durations) if window is None else min(window, len(durations))
            mean = running / n
            if gap >= max(3 * mean, mean + FREEZE_MIN_INCREASE):
                count += 1
                total += gap
                starts.append(render_times[i - 1])
                lengths.append(gap)
        durations.append(gap)
        running += gap
        if window is not None and len(durations) > window:
            running -= durations[-window - 1]
    return Freezes(count, total, tuple(starts), tuple(lengths))


def time_without_video(join_at: float, render_times: Sequence[float], end: float,
                       window: int | None = FREEZE_WINDOW) -> float:
    """Seconds after `join_at` with no moving picture: the wait for the first frame, every
    freeze, and a final gap up to `end` that would count as a freeze (or all of
    [join_at, end] when nothing rendered). The webrtc-stats freeze count alone says nothing
    about a stream that never starts or stops for good, so reports carry both.
    """
    if not render_times:
        return max(0.0, end - join_at)
    total = max(0.0, render_times[0] - join_at) + freezes(render_times, window).total_duration
    tail = end - render_times[-1]
    if tail > 0 and freezes(list(render_times) + [end], window).count > freezes(
        render_times, window
    ).count:
        total += tail
    return total


def bin_sum(times: Sequence[float], values: Sequence[float], bin_size: float,
            duration: float) -> list[float]:
    """Sum of `values` per bin of `bin_size` seconds over [0, duration)."""
    n = max(1, math.ceil(duration / bin_size - 1e-9))
    out = [0.0] * n
    for t, v in zip(times, values, strict=True):
        i = int(t / bin_size)
        if 0 <= i < n:
            out[i] += v
    return out


def bitrate_series(times: Sequence[float], sizes: Sequence[int], bin_size: float,
                   duration: float) -> list[float]:
    """Bits/s per bin from arrival times and packet sizes in bytes."""
    return [b * 8 / bin_size for b in bin_sum(times, sizes, bin_size, duration)]


def capacity_series(rate_at: Callable[[float], float] | None, bin_size: float, duration: float,
                    samples: int = 10) -> list[float | None]:
    """Mean capacity per bin (bits/s), sampled `samples` times per bin; None without a trace."""
    n = max(1, math.ceil(duration / bin_size - 1e-9))
    if rate_at is None:
        return [None] * n
    return [
        sum(rate_at((i + (k + 0.5) / samples) * bin_size) for k in range(samples)) / samples
        for i in range(n)
    ]


def utilisation(received: Sequence[float], capacity: Sequence[float | None], bin_size: float,
                convergence: float = 0.0) -> float | None:
    """Mean of received / capacity over bins starting at or after `convergence` seconds.

    Bins without a capacity (no trace) or with zero capacity are skipped; None if none left.
    """
    ratios = [
        r / c for i, (r, c) in enumerate(zip(received, capacity, strict=True))
        if i * bin_size >= convergence - 1e-9 and c is not None and c > 0
    ]
    return sum(ratios) / len(ratios) if ratios else None


def loss_fraction(sent: int, received: int) -> float:
    """Fraction of `sent` never received (0 when nothing was sent); duplicates do not count."""
    if sent <= 0:
        return 0.0
    return max(0.0, min(1.0, 1 - received / sent))


def combine_loss(*fractions: float) -> float:
    """Loss through links in series: 1 - prod(1 - p)."""
    keep = 1.0
    for p in fractions:
        keep *= 1 - p
    return 1 - keep


def ratio_series(numer: Sequence[float], denom: Sequence[float]) -> list[float | None]:
    """numer / denom per bin, None where denom is 0."""
    return [n / d if d else None for n, d in zip(numer, denom, strict=True)]


def binned_percentile(times: Sequence[float], values: Sequence[float], bin_size: float,
                      duration: float, p: float) -> list[float | None]:
    """The p-th percentile of `values` per time bin (None for empty bins)."""
    n = max(1, math.ceil(duration / bin_size - 1e-9))
    bins: list[list[float]] = [[] for _ in range(n)]
    for t, v in zip(times, values, strict=True):
        i = int(t / bin_size)
        if 0 <= i < n:
            bins[i].append(v)
    return [percentile(b, p) for b in bins]


def join_to_first_frame(join_at: float, render_times: Sequence[float]) -> float | None:
    """Seconds from joining to the first rendered frame; None if nothing rendered."""
    return render_times[0] - join_at if render_times else None
