"""One impairment link: random loss, a drop-tail bottleneck queue paced by a capacity trace,
propagation delay and jitter. Generic over the item carried (bytes, packet objects, ...).

Sans-I/O: every call takes ``now`` (seconds, non-decreasing); the caller delivers what
``poll(now)`` returns and re-arms one timer from ``get_timer()``. Deterministic for a given
``LinkConfig.seed`` (and the loss model's own seed).

Order of operations for a packet offered at ``now`` by :meth:`Link.send`:

1. random loss (``config.loss``, then the trace's per-segment ``loss`` if ``trace_loss``);
   a lost packet never occupies the queue (as netem);
2. the bottleneck: FIFO service along the trace's cumulative service curve (see
   :mod:`bench.traces`), which fixes the packet's departure time at enqueue; drop-tail if
   the bytes queued or in transmission plus this packet exceed ``queue_bytes``, or if the
   packet would wait (queue + transmission) more than ``queue_ms``; both limits apply when
   both are set, and 300 ms applies when neither is. Without a capacity nothing ever
   queues, so the limits do not apply;
3. propagation: ``delay`` + half the trace's ``rtt`` (if ``trace_delay``) + uniform
   ``[0, jitter]``. Without ``reorder`` a packet never arrives before the one sent before it
   (its arrival is pushed back instead, so jitter delays but never reorders); with
   ``reorder`` each packet keeps its own draw.

The trace is read at ``now - start``: the link's creation time is the trace's time 0.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import deque
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from bench.loss import LossModel, NoLoss
from bench.traces import CapacityTrace

__all__ = ["DEFAULT_QUEUE_MS", "Link", "LinkConfig", "LinkStats"]

T = TypeVar("T")

DEFAULT_QUEUE_MS = 300.0


@dataclass
class LinkConfig:
    """Impairments of one direction. Times in seconds except ``queue_ms``."""

    capacity: CapacityTrace | None = None  # None = unlimited
    queue_bytes: int | None = None
    queue_ms: float | None = None  # if both None: DEFAULT_QUEUE_MS
    delay: float = 0.0  # one-way propagation, s
    jitter: float = 0.0  # uniform 0..jitter added, s
    reorder: bool = False
    loss: LossModel = field(default_factory=NoLoss)
    trace_loss: bool = True  # apply a JSON trace's per-segment loss too
    seed: int = 0
    trace_delay: bool = True  # add half a JSON trace's per-segment rtt to the delay

    def __post_init__(self) -> None:
        if self.queue_bytes is not None and self.queue_bytes < 0:
            raise ValueError("queue_bytes must be >= 0")
        if self.queue_ms is not None and not self.queue_ms >= 0:
            raise ValueError("queue_ms must be >= 0")
        for name in ("delay", "jitter"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be finite and >= 0")

    @property
    def effective_queue_ms(self) -> float | None:
        """The delay limit in force: ``queue_ms``, or 300 ms when no limit was given."""
        if self.queue_ms is None and self.queue_bytes is None:
            return DEFAULT_QUEUE_MS
        return self.queue_ms


@dataclass
class LinkStats:
    """Counters of one link. ``queue_delays``: per accepted packet, the time from ``send``
    to leaving the bottleneck (queueing + transmission), seconds."""

    sent: int = 0
    sent_bytes: int = 0
    dropped_queue: int = 0
    dropped_queue_bytes: int = 0
    dropped_loss: int = 0
    dropped_loss_bytes: int = 0
    delivered: int = 0
    delivered_bytes: int = 0
    queue_delays: list[float] = field(default_factory=list)

    @property
    def dropped(self) -> int:
        return self.dropped_queue + self.dropped_loss

    def queue_delay_percentile(self, q: float) -> float:
        """Nearest-rank percentile (``q`` in 0..100) of ``queue_delays``; 0 if empty."""
        if not self.queue_delays:
            return 0.0
        ordered = sorted(self.queue_delays)
        rank = min(len(ordered) - 1, max(0, math.ceil(q / 100.0 * len(ordered)) - 1))
        return ordered[rank]

    @property
    def max_queue_delay(self) -> float:
        return max(self.queue_delays, default=0.0)

    @property
    def mean_queue_delay(self) -> float:
        return sum(self.queue_delays) / len(self.queue_delays) if self.queue_delays else 0.0


class Link(Generic[T]):
    """One direction of an impaired path (see the module docstring)."""

    def __init__(self, config: LinkConfig, start: float = 0.0) -> None:
        self.config = config
        self.start = start
        self.stats = LinkStats()
        self._rng = random.Random(config.seed)
        self._position = 0.0  # bytes of the trace's service curve used or wasted so far
        self._backlog: deque[tuple[float, int]] = deque()  # (departure, size) at bottleneck
        self._backlog_bytes = 0
        self._last_arrival = -math.inf
        self._last_now = -math.inf
        self._seq = 0
        self._out: list[tuple[float, int, int, T]] = []  # heap of (arrival, seq, size, item)

    def _check_time(self, now: float) -> None:
        if now < self._last_now:
            raise ValueError(f"time went backwards: {now} < {self._last_now}")
        self._last_now = now

    def _trim_backlog(self, now: float) -> None:
        while self._backlog and self._backlog[0][0] <= now:
            self._backlog_bytes -= self._backlog.popleft()[1]

    def queued_bytes(self, now: float) -> int:
        """Bytes accepted but not yet fully sent by the bottleneck at ``now``."""
        self._trim_backlog(now)
        return self._backlog_bytes

    def send(self, item: T, size: int, now: float) -> bool:
        """Offer a packet of ``size`` bytes at ``now``; False if it was dropped."""
        if size < 0:
            raise ValueError("size must be >= 0")
        self._check_time(now)
        cfg = self.config
        st = self.stats
        st.sent += 1
        st.sent_bytes += size
        trace = cfg.capacity
        t = max(0.0, now - self.start)

        lost = cfg.loss.lost()
        if not lost and cfg.trace_loss and trace is not None:
            p = trace.loss_at(t)
            lost = p is not None and p > 0.0 and self._rng.random() < p
        if lost:
            st.dropped_loss += 1
            st.dropped_loss_bytes += size
            return False

        if trace is None:
            start_pos, departure = self._position, now
        else:
            start_pos = max(self._position, trace.cumulative(t))
            departure = max(now, self.start + trace.time_at(start_pos + size))
        self._trim_backlog(now)
        limit_ms = cfg.effective_queue_ms
        if trace is not None and (
            (cfg.queue_bytes is not None and self._backlog_bytes + size > cfg.queue_bytes)
            or (limit_ms is not None and departure - now > limit_ms / 1000.0)
        ):
            st.dropped_queue += 1
            st.dropped_queue_bytes += size
            return False
        if trace is not None:
            self._position = start_pos + size
        self._backlog.append((departure, size))
        self._backlog_bytes += size
        st.queue_delays.append(departure - now)

        arrival = departure + cfg.delay
        if cfg.trace_delay and trace is not None:
            rtt_ms = trace.rtt_at(max(0.0, departure - self.start))
            if rtt_ms:
                arrival += rtt_ms / 2000.0
        if cfg.jitter > 0.0:
            arrival += self._rng.uniform(0.0, cfg.jitter)
        if not cfg.reorder:
            arrival = max(arrival, self._last_arrival)
            self._last_arrival = arrival
        heapq.heappush(self._out, (arrival, self._seq, size, item))
        self._seq += 1
        return True

    def poll(self, now: float) -> list[tuple[float, T]]:
        """Items that have arrived by ``now``, each with its exact arrival time, in order."""
        self._check_time(now)
        out: list[tuple[float, T]] = []
        heap = self._out
        st = self.stats
        while heap and heap[0][0] <= now:
            arrival, _, size, item = heapq.heappop(heap)
            out.append((arrival, item))
            st.delivered += 1
            st.delivered_bytes += size
        return out

    def get_timer(self) -> float | None:
        """When the next item arrives; None when nothing is in flight (or ever will be)."""
        if not self._out or math.isinf(self._out[0][0]):
            return None
        return self._out[0][0]

    def __len__(self) -> int:
        """Items accepted and not yet delivered."""
        return len(self._out)
