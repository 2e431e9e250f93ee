"""Probing: when to send a burst above the estimate, and what the burst measured.

`ProbeController` decides (libwebrtc probe_controller, LiveKit's probe on deficient
allocation):
* initial probes at 3x and 6x the start bitrate, so a viewer on a good link gets its top layer
  in about a second instead of tens of seconds of 8 %/s growth;
* further probing: a probe that came back above 70 % of its target is followed by one at 2x;
* allocation probes: when the allocator wants more than the estimate (`set_desired`), a probe
  at min(desired x 1.2, 2 x estimate), backing off (x2 up to 30 s) after probes that did not
  raise the estimate, and reset when the estimate falls (a drop, then capacity may return);
* periodic ALR probes: while the estimate sits below what is desired, one every
  `alr_interval` seconds at most, via the same rule;
* probing after a large drop (libwebrtc's RequestProbe): when the estimate fell below 66 % of
  what it was, one probe at 85 % of the value before the drop once `DROP_PROBE_DELAY` has let
  the queue drain, within `DROP_WINDOW` of the drop. A short outage (a fade, a handover)
  halves the estimate; the probe finds the old capacity again in one round trip instead of
  tens of seconds of growth. The drop probe waits while the delay detector still reports
  overuse (`overusing`; libwebrtc probes after a drop only once the detector is back to
  normal, and not while the delay increases): then the capacity is still falling, and a burst
  at the old rate would only fill the queue;
* network recovery (`on_network_recovered`, after feedback stopped for a while): the backoff
  is reset and a probe goes out at once; the further-probing rule then doubles it while it
  succeeds, as after the initial probes.

`ProbeBitrateEstimator` turns one cluster's feedback into a rate: bytes over the send span and
over the receive span; the link carries at most the smaller (libwebrtc probe_bitrate_estimator).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sfu.core.bwe.base import ProbeCluster

MIN_PROBE_PACKETS = 5
MIN_PROBE_DURATION = 0.015
PROBE_PACKET_BYTES = 1000
FURTHER_FRACTION = 0.7
MIN_RECEIVED_FRACTION = 0.8
PROBE_TIMEOUT = 1.0
BACKOFF_START = 2.0
BACKOFF_MAX = 30.0
# libwebrtc probes an application-limited sender every 5 s; an SFU viewer below its wanted
# layer is application-limited by the allocation itself, and a 5 s period plus the
# allocator's 2 s up hold put a capacity step-up's use 5-7 s late (RFC 8867, seeds 2-3).
ALR_INTERVAL = 2.5
DROP_FRACTION = 0.66
DROP_WINDOW = 5.0
DROP_PROBE_DELAY = 0.5
AFTER_DROP = 0.85


class ProbeController:
    def __init__(self, start_bitrate: float, *, max_bitrate: float = 50e6,
                 initial: bool = True) -> None:
        self._next_id = 1
        self._queue: list[ProbeCluster] = []
        self.max_bitrate = max_bitrate
        self.desired: float | None = None
        self._initial_pending = initial
        self._start = start_bitrate
        self._waiting: tuple[int, float, float] | None = None  # (id, bitrate, deadline)
        self._last_probe: float | None = None
        self._backoff = BACKOFF_START
        self._estimate_at_probe = 0.0
        self._last_estimate: float | None = None
        # (time of the drop, estimate before it) of the last large drop not yet probed
        self._drop: tuple[float, float] | None = None
        self._recovered = False
        self.sent = 0
        self.drop_probes = 0
        self.drop_probes_deferred = 0  # process() calls that held a due drop probe back
        # set by the estimator: the delay detector reports overuse (the queue is growing)
        self.overusing = False

    def _make(self, bitrate: float, now: float) -> ProbeCluster:
        bitrate = min(bitrate, self.max_bitrate)
        size = max(PROBE_PACKET_BYTES * MIN_PROBE_PACKETS,
                   int(bitrate * MIN_PROBE_DURATION / 8))
        cluster = ProbeCluster(self._next_id, bitrate, MIN_PROBE_PACKETS, size,
                               max(MIN_PROBE_DURATION, size * 8 / bitrate))
        self._next_id += 1
        self.sent += 1
        self._last_probe = now
        self._waiting = (cluster.id, bitrate, now + PROBE_TIMEOUT)
        return cluster

    def process(self, estimate: float, now: float) -> None:
        """Called on every estimate update and timer; queues the probes that are due."""
        last, self._last_estimate = self._last_estimate, estimate
        if last is not None and estimate < DROP_FRACTION * last:
            before = last if self._drop is None else max(last, self._drop[1])
            self._drop = (now, before)
        if self._initial_pending:
            self._initial_pending = False
            self._queue.append(self._make(3 * self._start, now))
            self._queue.append(self._make(6 * self._start, now))
            self._estimate_at_probe = estimate
            return
        if self._waiting is not None:
            if now < self._waiting[2]:
                return
            self._waiting = None  # timed out without a usable result
            self._failed()
        desired = self.desired
        if desired is None or estimate >= desired or estimate >= self.max_bitrate:
            return
        drop = self._drop
        if drop is not None:
            at, before = drop
            if now - at > DROP_WINDOW or estimate >= DROP_FRACTION * before:
                self._drop = None
            elif now - at >= DROP_PROBE_DELAY and self.overusing:
                self.drop_probes_deferred += 1  # still falling: wait, within DROP_WINDOW
            elif now - at >= DROP_PROBE_DELAY:
                self._drop = None
                self.drop_probes += 1
                self._estimate_at_probe = estimate
                self._queue.append(self._make(min(desired * 1.2, AFTER_DROP * before), now))
                return
        if self._recovered:
            self._recovered = False
            self._estimate_at_probe = estimate
            self._queue.append(self._make(min(desired * 1.2, 2 * estimate), now))
            return
        if self._last_probe is not None and now - self._last_probe < min(self._backoff,
                                                                         ALR_INTERVAL):
            return
        self._estimate_at_probe = estimate
        self._queue.append(self._make(min(desired * 1.2, 2 * estimate), now))

    def on_result(self, cluster_id: int, rate: float | None, estimate: float,
                  now: float) -> None:
        """A probe cluster's measured rate (None when too little of it came back)."""
        waiting = self._waiting
        if waiting is None or waiting[0] != cluster_id:
            return
        self._waiting = None
        target = waiting[1]
        if rate is not None and rate > FURTHER_FRACTION * target and (
            self.desired is None or rate < self.desired
        ) and target < self.max_bitrate:
            self._backoff = BACKOFF_START
            self._queue.append(self._make(2 * rate, now))
        elif rate is None or rate <= self._estimate_at_probe * 1.05:
            self._failed()
        else:
            self._backoff = BACKOFF_START

    def _failed(self) -> None:
        self._backoff = min(BACKOFF_MAX, self._backoff * 2)

    def on_decrease(self) -> None:
        """The estimate dropped: capacity may come back, probe again soon."""
        self._backoff = BACKOFF_START

    def on_network_recovered(self) -> None:
        """Feedback flows again after an outage: probe at once, whatever the backoff."""
        self._backoff = BACKOFF_START
        self._waiting = None
        self._recovered = True

    def pop(self) -> list[ProbeCluster]:
        out, self._queue = self._queue, []
        return out

    def next_check(self, now: float) -> float | None:
        if self._waiting is not None:
            return self._waiting[2]
        if self.desired is None or self._last_probe is None:
            return None
        return self._last_probe + min(self._backoff, ALR_INTERVAL)


@dataclass(slots=True)
class _ClusterLog:
    sent: list[tuple[float, int]] = field(default_factory=list)  # (send time, size)
    received: list[tuple[float, int]] = field(default_factory=list)  # (arrival, size)
    created: float = 0.0
    done: bool = False


class ProbeBitrateEstimator:
    def __init__(self) -> None:
        self._clusters: dict[int, _ClusterLog] = {}

    def on_sent(self, cluster: int, size: int, now: float) -> None:
        log = self._clusters.get(cluster)
        if log is None:
            log = self._clusters[cluster] = _ClusterLog(created=now)
        log.sent.append((now, size))

    def on_received(self, cluster: int, send_time: float, arrival: float, size: int,
                    now: float) -> tuple[int, float | None] | None:
        """Account one acknowledged probe packet; (cluster, rate) when the cluster is judged."""
        log = self._clusters.get(cluster)
        if log is None or log.done:
            return None
        log.received.append((arrival, size))
        if len(log.received) < max(MIN_PROBE_PACKETS, MIN_RECEIVED_FRACTION * len(log.sent)):
            return None
        log.done = True
        return cluster, _rate(log)

    def expire(self, now: float) -> list[int]:
        """Clusters older than the timeout (their result, if any, is lost)."""
        old = [c for c, log in self._clusters.items() if now - log.created > PROBE_TIMEOUT * 2]
        for c in old:
            del self._clusters[c]
        return old


def _rate(log: _ClusterLog) -> float | None:
    sent = sorted(log.sent)
    recv = sorted(log.received)
    if len(sent) < 2 or len(recv) < 2:
        return None
    send_span = max(sent[-1][0] - sent[0][0], 0.001)
    recv_span = max(recv[-1][0] - recv[0][0], 0.001)
    send_rate = sum(s for _, s in sent[:-1]) * 8 / send_span
    recv_rate = sum(s for _, s in recv[1:]) * 8 / recv_span
    if recv_rate > 2 * send_rate:
        return None  # compressed on arrival by something else: not a measurement
    rate = min(send_rate, recv_rate)
    if recv_rate < 0.9 * send_rate:
        rate = 0.95 * recv_rate  # the probe saturated the link: the receive rate is it
    return rate
