"""Send-side Google Congestion Control for one viewer's downlink, from transport-cc feedback.

Pipeline per feedback message (draft-ietf-rmcat-gcc-02, libwebrtc goog_cc):
1. match each reported sequence number with what was sent (`on_packet_sent`): send time,
   size, probe cluster; count the ones reported lost;
2. acknowledged bitrate: bytes received over the last `ACK_WINDOW` of arrival time;
3. delay-based: InterArrival groups -> TrendlineEstimator -> OveruseDetector -> AIMD;
4. probe results: a cluster's measured rate above the estimate makes the estimate jump there;
5. loss-based bound (>10 % cut, <2 % grow) from the feedback's losses and RR reports;
6. target = min(delay-based, loss-based), clamped to [min, max].

The timer runs the probe controller (initial, allocation, periodic and after-drop probes)
and ages the estimate down when feedback stops for `FEEDBACK_TIMEOUT` (a viewer whose
feedback vanished is probably congested, or its link is out). When feedback comes back after
such a gap, the link capacity is forgotten and a probe goes out at once (recovery after an
outage). A probe result above the estimate sets it, and lifts the loss-based bound with it.
Sans-I/O: inputs carry `now`.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Any

from sfu.core.bwe.aimd import AimdRateControl
from sfu.core.bwe.base import OVERUSING, Estimator, ProbeCluster, register
from sfu.core.bwe.delay import InterArrival, OveruseDetector, TrendlineEstimator
from sfu.core.bwe.loss import LossBasedBound
from sfu.core.bwe.probe import ProbeBitrateEstimator, ProbeController
from sfu.wire.twcc import TransportFeedback

START_BITRATE = 300_000.0
MIN_BITRATE = 30_000.0
MAX_BITRATE = 20e6
ACK_WINDOW = 0.5
SENT_HISTORY = 2.0  # seconds of sent packets kept for matching feedback
MAX_SENT = 16384
LOSS_WINDOW = 0.5  # seconds of feedback summed per loss-based update
FEEDBACK_TIMEOUT = 1.0
TIMER_INTERVAL = 0.1


class _Acked:
    """Throughput of acknowledged packets over a sliding window of arrival time."""

    def __init__(self, window: float = ACK_WINDOW) -> None:
        self._window = window
        self._samples: deque[tuple[float, int]] = deque()
        self._bytes = 0
        self._first: float | None = None

    def add(self, arrival: float, size: int) -> None:
        if self._first is None:
            self._first = arrival
        self._samples.append((arrival, size))
        self._bytes += size

    def rate(self) -> float | None:
        s = self._samples
        if not s:
            return None
        latest = max(s[-1][0], s[0][0])
        while s and s[0][0] < latest - self._window:
            self._bytes -= s.popleft()[1]
        assert self._first is not None
        span = min(self._window, latest - self._first)
        if span < 0.15:
            return None
        return self._bytes * 8 / span


class GccEstimator(Estimator):
    name = "gcc"

    def __init__(
        self,
        *,
        start_bitrate: float = START_BITRATE,
        min_bitrate: float = MIN_BITRATE,
        max_bitrate: float = MAX_BITRATE,
        initial_probes: bool = True,
    ) -> None:
        self._min = min_bitrate
        self._max = max_bitrate
        self._sent: OrderedDict[int, tuple[float, int, int | None]] = OrderedDict()
        self._highest_sent: int | None = None
        self._acked_seqs: set[int] = set()  # recent seqs already reported received
        self._inter = InterArrival()
        self._trend = TrendlineEstimator()
        self._detector = OveruseDetector()
        self._aimd = AimdRateControl(start_bitrate, min_bitrate=min_bitrate,
                                     max_bitrate=max_bitrate)
        self._loss = LossBasedBound()
        self._acked = _Acked()
        self._probes = ProbeController(start_bitrate, max_bitrate=max_bitrate,
                                       initial=initial_probes)
        self._probe_rates = ProbeBitrateEstimator()
        self._target = start_bitrate
        self._loss_lost = 0
        self._loss_total = 0
        self._loss_since: float | None = None
        self._rtt = 0.1
        self._last_feedback: float | None = None
        self._timed_out = False
        self._timer: float | None = None
        self._started = False
        # counters
        self.feedbacks = 0
        self.packets_acked = 0
        self.packets_lost = 0
        self.unknown = 0
        self.probe_results: list[tuple[float, float]] = []  # (time, rate)
        self.overuses = 0
        self.recoveries = 0

    # --- inputs ----------------------------------------------------------------------------

    def on_packet_sent(
        self, transport_seq: int, size: int, now: float, probe_cluster: int | None = None
    ) -> None:
        highest = self._highest_sent
        if highest is None:
            ext = transport_seq & 0xFFFF
        else:
            ext = highest + ((transport_seq - highest + 0x8000) & 0xFFFF) - 0x8000
        if highest is None or ext > highest:
            self._highest_sent = ext
        self._sent[ext] = (now, size, probe_cluster)
        if probe_cluster is not None:
            self._probe_rates.on_sent(probe_cluster, size, now)
        sent = self._sent
        while sent and (len(sent) > MAX_SENT or next(iter(sent.values()))[0] < now - SENT_HISTORY):
            seq, _ = sent.popitem(last=False)
            self._acked_seqs.discard(seq)
        if not self._started:
            self._started = True
            self._probes.process(self._target, now)
            self._timer = now + TIMER_INTERVAL

    def on_packets_sent(self, packets: list[tuple[int, int, float, int | None]]) -> None:
        """`on_packet_sent` for a batch, trimming the history once at the end."""
        if not packets:
            return
        sent = self._sent
        highest = self._highest_sent
        probe_rates = self._probe_rates
        for transport_seq, size, now, probe_cluster in packets:
            if highest is None:
                ext = highest = transport_seq & 0xFFFF
            else:
                ext = highest + ((transport_seq - highest + 0x8000) & 0xFFFF) - 0x8000
                if ext > highest:
                    highest = ext
            sent[ext] = (now, size, probe_cluster)
            if probe_cluster is not None:
                probe_rates.on_sent(probe_cluster, size, now)
        self._highest_sent = highest
        now = packets[-1][2]
        while sent and (len(sent) > MAX_SENT or next(iter(sent.values()))[0] < now - SENT_HISTORY):
            seq, _ = sent.popitem(last=False)
            self._acked_seqs.discard(seq)
        if not self._started:
            first = packets[0][2]
            self._started = True
            self._probes.process(self._target, first)
            self._timer = first + TIMER_INTERVAL

    def on_feedback(self, feedback: TransportFeedback, now: float) -> None:
        self.feedbacks += 1
        if self._timed_out:
            # Feedback again after an outage: what the link carries now is unknown; probe
            # for it rather than creep up from the backed-off estimate.
            self._timed_out = False
            self.recoveries += 1
            self._aimd.capacity.reset()
            self._probes.on_network_recovered()
        self._last_feedback = now
        highest = self._highest_sent
        if highest is None:
            return
        arrivals = dict(feedback.received())
        results: list[tuple[float, float, int, int | None]] = []  # arrival, send, size, cluster
        lost = received = 0
        newest_send: float | None = None
        for seq16, tick in feedback.packets:
            ext = highest + ((seq16 - highest + 0x8000) & 0xFFFF) - 0x8000
            info = self._sent.get(ext)
            if info is None:
                self.unknown += 1
                continue
            send_time, size, cluster = info
            if tick is None:
                if ext not in self._acked_seqs:
                    lost += 1
                continue
            if ext in self._acked_seqs:
                continue  # reported again (the generator re-reports late packets)
            self._acked_seqs.add(ext)
            received += 1
            results.append((arrivals[seq16], send_time, size, cluster))
            if newest_send is None or send_time > newest_send:
                newest_send = send_time
        self.packets_acked += received
        self.packets_lost += lost
        if newest_send is not None:
            sample = max(0.001, now - newest_send)
            self._rtt = 0.8 * self._rtt + 0.2 * sample if self.feedbacks > 1 else sample
            self._aimd.rtt = self._rtt
        # Arrival order is what the queue did; grouping goes by send order within it.
        results.sort(key=lambda r: (r[1], r[0]))
        last_usage = self._detector.state
        probe_jump: float | None = None
        for arrival, send_time, size, cluster in results:
            self._acked.add(arrival, size)
            delta = self._inter.add(send_time, arrival, size)
            if delta is not None:
                trend = self._trend.update(delta)
                last_usage = self._detector.detect(trend, delta.send_delta,
                                                   self._trend.num_deltas, now)
            if cluster is not None:
                judged = self._probe_rates.on_received(cluster, send_time, arrival, size, now)
                if judged is not None:
                    cid, rate = judged
                    self._probes.on_result(cid, rate, self._target, now)
                    if rate is not None:
                        self.probe_results.append((now, rate))
                        if probe_jump is None or rate > probe_jump:
                            probe_jump = rate
        acked = self._acked.rate()
        self._probes.overusing = last_usage == OVERUSING
        if last_usage == OVERUSING:
            self.overuses += 1
        before = self._aimd.bitrate
        if probe_jump is not None and probe_jump > self._aimd.bitrate and last_usage != OVERUSING:
            # A probe measured what the path carries: it is the estimate, for the loss-based
            # bound too (libwebrtc's SetSendBitrate on a probe result), and any link capacity
            # learnt below it is stale.
            self._aimd.set_estimate(probe_jump, now)
            self._aimd.capacity.reset()
            self._loss.lift(probe_jump)
        else:
            self._aimd.update(last_usage, acked, now)
        # loss-based, over windows of feedback
        self._loss_lost += lost
        self._loss_total += lost + received
        if self._loss_since is None:
            self._loss_since = now
        if now - self._loss_since >= LOSS_WINDOW and self._loss_total >= 20:
            self._update_loss(self._loss_lost / self._loss_total, now)
            self._loss_lost = self._loss_total = 0
            self._loss_since = now
        self._refresh(now)
        if self._aimd.bitrate < before * 0.95:
            self._probes.on_decrease()

    def on_loss_report(self, fraction_lost: float, now: float) -> None:
        self._update_loss(min(1.0, max(0.0, fraction_lost)), now)
        self._refresh(now)

    def on_rtt(self, rtt: float, now: float) -> None:
        if rtt > 0:
            self._rtt = rtt
            self._aimd.rtt = rtt

    def set_desired_bitrate(self, bitrate: float, now: float) -> None:
        self._probes.desired = bitrate
        self._probes.process(self._target, now)

    def pop_probes(self) -> list[ProbeCluster]:
        return self._probes.pop()

    def _update_loss(self, fraction: float, now: float) -> None:
        self._loss.update(fraction, self._aimd.bitrate, self._rtt, now)

    def _refresh(self, now: float) -> None:
        target = self._loss.apply(self._aimd.bitrate)
        self._target = min(self._max, max(self._min, target))
        self._probes.process(self._target, now)

    # --- timer -----------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        return self._timer

    def handle_timer(self, now: float) -> None:
        if self._timer is None or now < self._timer:
            return
        self._timer = now + TIMER_INTERVAL
        if self._last_feedback is not None and now - self._last_feedback > FEEDBACK_TIMEOUT:
            # No feedback: halve at most once per timeout, like libwebrtc's
            # feedback-timeout backoff, so a dead viewer does not keep a large allocation.
            self._aimd.set_estimate(self._aimd.bitrate * 0.5, now)
            self._last_feedback = now
            self._timed_out = True
        self._probe_rates.expire(now)
        self._refresh(now)

    # --- outputs ---------------------------------------------------------------------------

    @property
    def target_bitrate(self) -> float:
        return self._target

    @property
    def state(self) -> str:
        return self._detector.state

    @property
    def rtt(self) -> float:
        return self._rtt

    @property
    def acked_bitrate(self) -> float | None:
        return self._acked.rate()

    def stats(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "target_bitrate": self._target,
            "delay_based": self._aimd.bitrate,
            "loss_bound": self._loss.bound,
            "state": self.state,
            "threshold_ms": self._detector.threshold,
            "trend": self._trend.modified_trend,
            "rtt": self._rtt,
            "feedbacks": self.feedbacks,
            "packets_acked": self.packets_acked,
            "packets_lost": self.packets_lost,
            "probes_sent": self._probes.sent,
            "probe_results": len(self.probe_results),
            "decreases": self._aimd.decreases,
            "drop_probes": self._probes.drop_probes,
            "drop_probes_deferred": self._probes.drop_probes_deferred,
            "recoveries": self.recoveries,
            "loss_decreases": self._loss.decreases,
        }


register("gcc", GccEstimator)
