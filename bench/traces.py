"""Capacity traces for the impairment link: Mahimahi files, OpenNetLab JSON, synthetic steps.

Sans-I/O apart from reading the trace file once: no clock, no sockets. Time is ``t: float``
seconds from the start of the trace; every trace loops with period ``duration``.

Service model (what :class:`bench.link.Link` relies on). A trace is a *cumulative service
curve*: ``cumulative(t)`` is the number of bytes the bottleneck may transmit in ``[0, t)``
(looping), and ``time_at(x)`` is its inverse, the earliest time at which ``x`` bytes have
been offered. A FIFO link keeps one number, its service position in bytes; a packet of
``N`` bytes arriving at ``a`` starts at ``max(position, cumulative(a))`` (capacity offered
while the queue was empty is lost) and leaves at ``time_at(start + N)``. So the link's
departures never exceed the capacity: the bytes that leave in any window are at most the
bytes the trace offers in it plus the one packet that was already partly sent.

Mahimahi: each line is a millisecond timestamp at which ONE delivery opportunity of 1500
bytes occurs; repeated timestamps are several opportunities in that millisecond; the file
loops with period = last timestamp (so a file holding just ``1`` is 1500 bytes per ms =
12 Mbit/s). As in mm-link's ``LinkQueue::rationalize`` (ravinet/mahimahi master) a packet
may span opportunities and the surplus of an opportunity serves the next queued packet,
but bytes of an opportunity that find the queue empty are lost. Two simplifications: time
is continuous (an opportunity at exactly the arrival time is usable, where mm-link works in
whole milliseconds and burns the current one before enqueueing) and the opportunity is
1500 bytes as the trace README says (mm-link's TUN uses 1504; pass ``opportunity_bytes``).

JSON (OpenNetLab/AlphaRTC gym): ``{"uplink": {"trace_pattern": [{"duration": ms,
"capacity": kbps, "loss": fraction, "rtt": ms, "jitter": ms}, ...]}, "downlink": {...}}``;
segments apply in order and loop, capacity 0 is an outage, and the fluid rate is constant
inside a segment. ``loss``/``rtt``/``jitter`` are optional per segment (``loss_at`` etc.
return None where absent). Some published files contain absurd single-segment outliers
(e.g. 8,039,999 kbps in ``4G_3mbps.json``), so by default capacities are clipped to
``clip`` (2.0) times the median of the non-zero segment capacities; ``clip=None`` keeps the
file as is. Note that clipping also flattens deliberate steps in small hand-made files
such as ``trace_example.json``; pass ``clip=None`` for those.
"""

from __future__ import annotations

import json
import math
import statistics
from abc import ABC, abstractmethod
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from itertools import accumulate
from pathlib import Path
from typing import Any

__all__ = [
    "MAHIMAHI_OPPORTUNITY_BYTES",
    "RFC8867_VARIABLE",
    "CapacityTrace",
    "JsonTrace",
    "MahimahiTrace",
    "StepTrace",
    "TraceError",
    "constant",
    "load_trace",
    "read_json_trace",
    "read_mahimahi",
    "steps",
]

MAHIMAHI_OPPORTUNITY_BYTES = 1500


class TraceError(ValueError):
    """A trace file or spec that cannot be used; the message names file:line or JSON path."""


class CapacityTrace(ABC):
    """Time-varying bottleneck capacity, looping with period ``duration`` seconds."""

    duration: float

    @abstractmethod
    def cumulative(self, t: float) -> float:
        """Bytes offered in ``[0, t)`` (0 for ``t <= 0``), counting every loop."""

    @abstractmethod
    def time_at(self, position: float) -> float:
        """Earliest time at which ``position`` bytes have been offered (``inf`` if never)."""

    @abstractmethod
    def rate_at(self, t: float) -> float:
        """Capacity in bits/s at time ``t`` (looping)."""

    @abstractmethod
    def next_opportunity(self, t: float) -> float:
        """Earliest time ``>= t`` at which the bottleneck can transmit (``inf`` if never)."""

    def serve(self, t: float, queue_bytes: int) -> float:
        """When ``queue_bytes`` bytes that are queued at ``t`` on an idle link have all left.

        This is the departure time of a head-of-line packet of that size (or of the last
        byte of a backlog of that size) when service starts at ``t``; ``t`` itself if zero.
        """
        if queue_bytes <= 0:
            return t
        return max(t, self.time_at(self.cumulative(t) + queue_bytes))

    def mean_rate(self, t0: float, t1: float) -> float:
        """Average capacity in bits/s over ``[t0, t1)``."""
        if t1 <= t0:
            raise ValueError("mean_rate needs t1 > t0")
        return (self.cumulative(t1) - self.cumulative(t0)) * 8.0 / (t1 - t0)

    def loss_at(self, t: float) -> float | None:
        """Random loss fraction the trace prescribes at ``t``, or None if it says nothing."""
        return None

    def rtt_at(self, t: float) -> float | None:
        """Round-trip delay in ms the trace prescribes at ``t``, or None if it says nothing."""
        return None

    def jitter_at(self, t: float) -> float | None:
        """Jitter in ms the trace prescribes at ``t``, or None if it says nothing."""
        return None


class MahimahiTrace(CapacityTrace):
    """Discrete delivery opportunities at millisecond timestamps (see the module docstring)."""

    def __init__(
        self,
        timestamps_ms: Sequence[int],
        opportunity_bytes: int = MAHIMAHI_OPPORTUNITY_BYTES,
        rate_window: float = 0.5,
        name: str = "<mahimahi>",
    ) -> None:
        if not timestamps_ms:
            raise TraceError(f"{name}: no timestamps")
        if any(b < a for a, b in zip(timestamps_ms, timestamps_ms[1:], strict=False)):
            raise TraceError(f"{name}: timestamps must be non-decreasing")
        if timestamps_ms[0] < 0:
            raise TraceError(f"{name}: negative timestamp")
        if timestamps_ms[-1] <= 0:
            raise TraceError(f"{name}: trace must last a nonzero time (last timestamp is 0)")
        if opportunity_bytes <= 0 or rate_window <= 0:
            raise ValueError("opportunity_bytes and rate_window must be positive")
        self.name = name
        self.timestamps_ms: tuple[int, ...] = tuple(timestamps_ms)
        self.opportunity_bytes = opportunity_bytes
        #: ``rate_at`` averages over aligned bins of this many seconds (mm-graph uses 0.5 s).
        self.rate_window = rate_window
        self._period_ms = self.timestamps_ms[-1]
        self._count = len(self.timestamps_ms)
        self._at_end = self._count - bisect_left(self.timestamps_ms, self._period_ms)
        self.duration = self._period_ms / 1000.0

    @property
    def mean_bps(self) -> float:
        """Average capacity over one period, bits/s."""
        return self._count * self.opportunity_bytes * 8.0 / self.duration

    def opportunities_before(self, t: float) -> int:
        """Number of delivery opportunities strictly before ``t`` seconds."""
        # Snap to nanoseconds so that t == time_at(...) round-trips exactly.
        t_ms = round(t * 1000.0, 6)
        if t_ms <= 0:
            return 0
        k = math.floor(t_ms / self._period_ms)
        within = t_ms - k * self._period_ms
        n = k * self._count + bisect_left(self.timestamps_ms, within)
        if within == 0 and k >= 1:
            n -= self._at_end  # the previous loop's last opportunities are at exactly t
        return n

    def cumulative(self, t: float) -> float:
        return float(self.opportunities_before(t) * self.opportunity_bytes)

    def time_at(self, position: float) -> float:
        if position <= 0:
            return 0.0
        m = math.ceil(position / self.opportunity_bytes)  # 1-based opportunity number
        k, j = divmod(m - 1, self._count)
        return (k * self._period_ms + self.timestamps_ms[j]) / 1000.0

    def next_opportunity(self, t: float) -> float:
        return max(t, self.time_at(self.cumulative(t) + 1))

    def rate_at(self, t: float) -> float:
        t0 = math.floor(t / self.rate_window) * self.rate_window
        return self.mean_rate(t0, t0 + self.rate_window)

    def __repr__(self) -> str:
        return f"MahimahiTrace({self.name!r}, {self._count} opportunities, {self.duration} s)"


class StepTrace(CapacityTrace):
    """Piecewise-constant fluid capacity: ``segments`` of ``(duration_s, rate_bps)``."""

    def __init__(self, segments: Sequence[tuple[float, float]], name: str = "<steps>") -> None:
        if not segments:
            raise ValueError("steps: at least one segment is needed")
        for i, (dur, rate) in enumerate(segments):
            if not (math.isfinite(dur) and math.isfinite(rate)) or dur < 0 or rate < 0:
                raise ValueError(f"steps: segment {i}: duration and rate must be finite, >= 0")
        self.name = name
        self.segments: tuple[tuple[float, float], ...] = tuple(
            (float(d), float(r)) for d, r in segments
        )
        self.duration = sum(d for d, _ in self.segments)
        if self.duration <= 0:
            raise ValueError("steps: total duration must be positive")
        self._starts = [0.0, *accumulate(d for d, _ in self.segments)][:-1]
        self._bps = [r / 8.0 for _, r in self.segments]  # bytes per second
        ends = list(accumulate(d * b for (d, _), b in zip(self.segments, self._bps, strict=True)))
        self._cum_end = ends
        self._cum_start = [0.0, *ends[:-1]]
        self._period_bytes = ends[-1]

    @property
    def mean_bps(self) -> float:
        """Average capacity over one period, bits/s."""
        return self._period_bytes * 8.0 / self.duration

    def _index(self, t: float) -> tuple[int, int, float]:
        """(loop number, segment index, offset in period) for ``t >= 0``."""
        k = math.floor(t / self.duration)
        w = t - k * self.duration
        if w >= self.duration:  # float rounding
            k, w = k + 1, 0.0
        i = max(0, bisect_right(self._starts, w) - 1)
        return k, i, w

    def cumulative(self, t: float) -> float:
        if t <= 0:
            return 0.0
        k, i, w = self._index(t)
        partial = self._cum_start[i] + min(w - self._starts[i], self.segments[i][0]) * self._bps[i]
        return k * self._period_bytes + partial

    def time_at(self, position: float) -> float:
        if position <= 0:
            return 0.0
        if self._period_bytes <= 0:
            return math.inf
        k = max(0, math.ceil(position / self._period_bytes) - 1)
        rem = position - k * self._period_bytes
        while rem > self._period_bytes:
            k, rem = k + 1, rem - self._period_bytes
        while rem <= 0 and k > 0:
            k, rem = k - 1, rem + self._period_bytes
        i = min(bisect_left(self._cum_end, rem), len(self.segments) - 1)
        while self._bps[i] <= 0 and i + 1 < len(self.segments):  # flat: take the next one
            i += 1
        offset = (rem - self._cum_start[i]) / self._bps[i]
        return k * self.duration + self._starts[i] + min(max(offset, 0.0), self.segments[i][0])

    def segment_at(self, t: float) -> int:
        """Index of the segment in force at ``t`` (looping)."""
        return self._index(max(t, 0.0))[1]

    def rate_at(self, t: float) -> float:
        return self.segments[self.segment_at(t)][1]

    def next_opportunity(self, t: float) -> float:
        if self._period_bytes <= 0:
            return math.inf
        k, i, _ = self._index(max(t, 0.0))
        if self._bps[i] > 0:
            return t
        for step in range(1, len(self.segments) + 1):
            j = (i + step) % len(self.segments)
            if self._bps[j] > 0:
                loops = k + (i + step) // len(self.segments)
                return loops * self.duration + self._starts[j]
        return math.inf  # unreachable: some segment has capacity

    def __repr__(self) -> str:
        kind = type(self).__name__
        return f"{kind}({self.name!r}, {len(self.segments)} segments, {self.duration} s)"


class JsonTrace(StepTrace):
    """An OpenNetLab/AlphaRTC JSON trace: steps plus optional per-segment loss/rtt/jitter."""

    def __init__(
        self,
        segments: Sequence[tuple[float, float]],
        loss: Sequence[float | None],
        rtt_ms: Sequence[float | None],
        jitter_ms: Sequence[float | None],
        name: str = "<json>",
        clipped_segments: int = 0,
        clip_bps: float | None = None,
    ) -> None:
        super().__init__(segments, name)
        self.loss = tuple(loss)
        self.rtt_ms = tuple(rtt_ms)
        self.jitter_ms = tuple(jitter_ms)
        #: How many segments ``clip`` lowered, and to what (bits/s); 0 / None if none.
        self.clipped_segments = clipped_segments
        self.clip_bps = clip_bps

    def loss_at(self, t: float) -> float | None:
        return self.loss[self.segment_at(t)]

    def rtt_at(self, t: float) -> float | None:
        return self.rtt_ms[self.segment_at(t)]

    def jitter_at(self, t: float) -> float | None:
        return self.jitter_ms[self.segment_at(t)]


def read_mahimahi(
    path: str | Path, opportunity_bytes: int = MAHIMAHI_OPPORTUNITY_BYTES
) -> MahimahiTrace:
    """Read a Mahimahi trace; errors name ``file:line``."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="ascii")
    except FileNotFoundError as e:
        raise TraceError(f"{name}: no such file") from e
    except (OSError, UnicodeDecodeError) as e:
        raise TraceError(f"{name}: cannot read: {e}") from e
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()  # trailing blank lines are harmless
    stamps: list[int] = []
    previous = 0
    for lineno, raw in enumerate(lines, 1):
        s = raw.strip()
        if not s:
            raise TraceError(f"{name}:{lineno}: empty line")
        try:
            ms = int(s)
        except ValueError:
            raise TraceError(f"{name}:{lineno}: not an integer: {s!r}") from None
        if ms < 0:
            raise TraceError(f"{name}:{lineno}: negative timestamp: {ms}")
        if ms < previous:
            raise TraceError(
                f"{name}:{lineno}: timestamp {ms} < previous {previous} "
                "(timestamps must be non-decreasing)"
            )
        previous = ms
        stamps.append(ms)
    if not stamps:
        raise TraceError(f"{name}:1: empty trace (no timestamps)")
    if stamps[-1] == 0:
        raise TraceError(
            f"{name}:{len(stamps)}: trace must last a nonzero time (last timestamp is 0)"
        )
    return MahimahiTrace(stamps, opportunity_bytes=opportunity_bytes, name=name)


def _number(value: Any, where: str, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TraceError(f"{where}: {what} must be a number, got {value!r}")
    f = float(value)
    if not math.isfinite(f) or f < 0:
        raise TraceError(f"{where}: {what} must be a finite number >= 0, got {value!r}")
    return f


def _optional(seg: dict[str, Any], key: str, where: str) -> float | None:
    if key not in seg or seg[key] is None:
        return None
    return _number(seg[key], f"{where}.{key}", key)


def read_json_trace(
    path: str | Path, direction: str = "uplink", clip: float | None = 2.0
) -> JsonTrace:
    """Read an OpenNetLab JSON trace for ``direction``; errors name the file and JSON path.

    ``clip``: cap every segment's capacity at ``clip`` x the median of the non-zero segment
    capacities (None: no clipping). See the module docstring.
    """
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise TraceError(f"{name}: no such file") from e
    except (OSError, UnicodeDecodeError) as e:
        raise TraceError(f"{name}: cannot read: {e}") from e
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise TraceError(f"{name}:{e.lineno}:{e.colno}: invalid JSON: {e.msg}") from None
    if not isinstance(doc, dict):
        raise TraceError(f"{name}: $: expected an object")
    if direction not in doc:
        raise TraceError(f"{name}: $.{direction}: missing")
    link = doc[direction]
    if not isinstance(link, dict) or "trace_pattern" not in link:
        raise TraceError(f"{name}: $.{direction}.trace_pattern: missing")
    pattern = link["trace_pattern"]
    base = f"$.{direction}.trace_pattern"
    if not isinstance(pattern, list) or not pattern:
        raise TraceError(f"{name}: {base}: expected a non-empty list")
    segments: list[tuple[float, float]] = []
    loss: list[float | None] = []
    rtt: list[float | None] = []
    jitter: list[float | None] = []
    for i, seg in enumerate(pattern):
        where = f"{name}: {base}[{i}]"
        if not isinstance(seg, dict):
            raise TraceError(f"{where}: expected an object")
        for key in ("duration", "capacity"):
            if key not in seg:
                raise TraceError(f"{where}.{key}: missing")
        dur_ms = _number(seg["duration"], f"{where}.duration", "duration")
        kbps = _number(seg["capacity"], f"{where}.capacity", "capacity")
        seg_loss = _optional(seg, "loss", where)
        if seg_loss is not None and seg_loss > 1:
            raise TraceError(f"{where}.loss: must be a fraction in [0, 1], got {seg_loss}")
        segments.append((dur_ms / 1000.0, kbps * 1000.0))
        loss.append(seg_loss)
        rtt.append(_optional(seg, "rtt", where))
        jitter.append(_optional(seg, "jitter", where))
    if sum(d for d, _ in segments) <= 0:
        raise TraceError(f"{name}: {base}: total duration is 0")
    if all(r <= 0 for _, r in segments):
        raise TraceError(f"{name}: {base}: every segment has capacity 0")
    clipped, cap = 0, None
    if clip is not None:
        if clip <= 0:
            raise ValueError("clip must be positive or None")
        cap = clip * statistics.median(r for _, r in segments if r > 0)
        clipped = sum(1 for _, r in segments if r > cap)
        segments = [(d, min(r, cap)) for d, r in segments]
    return JsonTrace(segments, loss, rtt, jitter, name, clipped, cap if clipped else None)


def constant(rate_bps: float) -> StepTrace:
    """A constant capacity (``0`` = a permanent outage); period 1 s."""
    return StepTrace([(1.0, rate_bps)], name=f"const:{rate_bps:g}")


def steps(segments: list[tuple[float, float]]) -> StepTrace:
    """A looping step trace from ``(duration_s, rate_bps)`` pairs."""
    return StepTrace(segments)


#: RFC 8867 section 5.1 ("Variable Available Capacity with a Single Flow"), forward
#: direction: 1.0 Mbit/s from 0 s, 2.5 Mbit/s from 40 s, 0.6 Mbit/s from 60 s and 1.0 Mbit/s
#: from 80 s to the end of the 100 s test (loops after 100 s).
RFC8867_VARIABLE = StepTrace([(40, 1e6), (20, 2.5e6), (20, 0.6e6), (20, 1e6)], name="rfc8867")

_UNITS = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9}


def _parse_rate(text: str, spec: str) -> float:
    s = text.strip().lower().removesuffix("bps").removesuffix("bit/s")
    unit = s[-1:] if s[-1:] in ("k", "m", "g") else ""
    try:
        value = float(s[: len(s) - len(unit)]) * _UNITS[unit]
    except ValueError:
        raise TraceError(f"{spec}: not a rate in bits/s: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise TraceError(f"{spec}: rate must be finite and >= 0: {text!r}")
    return value


def load_trace(
    spec: str, *, direction: str = "uplink", clip: float | None = 2.0
) -> CapacityTrace:
    """A trace from a spec string.

    ``const:<bits/s>`` (``const:2.5e6``, ``const:800k``, ``const:2M``), ``rfc8867``, or a path:
    ``*.json`` is read with :func:`read_json_trace` (``direction``, ``clip``), anything else
    (``.up``, ``.down``, ...) with :func:`read_mahimahi`.
    """
    s = spec.strip()
    if not s:
        raise TraceError("empty trace spec")
    if s.lower().startswith("const:"):
        return constant(_parse_rate(s[len("const:") :], spec))
    if s.lower() == "rfc8867":
        return RFC8867_VARIABLE
    if s.lower().endswith(".json"):
        return read_json_trace(s, direction=direction, clip=clip)
    return read_mahimahi(s)
